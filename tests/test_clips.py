"""Clips of security alerts: cut on the node from the real RTSP camera, uploaded to a real API, played back."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import av
import httpx
import psycopg
import pytest
from api_helpers import raise_alert
from conftest import ApiServer, edge_and_ingest, eventually

from alerts.core.models import EventKind, Place
from deploy.local.services import Service, free_port
from edge.clip_upload import ClipSpool, ClipUploader
from edge.clips import ClipRecorder, ClipsConfig
from edge.config import parse_config
from ingest.capture import CameraSource, CaptureConfig

KEY_FRAME_S = 1.0
"""The stand-in's footage has a key frame every 10 frames at 10 fps."""
CAMERA = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="cam-walkway")

NODE = """
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker}"}}
uplink: {{spool: "{folder}/outbox.sqlite3", heartbeat_s: 1}}
cameras:
  - id: cam-walkway
    capture: {{url: "{camera}"}}
    tamper: null
    scene:
      # Three lines: each line's first crossing raises an alert of its own (later ones update it for 5 minutes),
      # so one comes after the camera's ring holds a pre-roll, however early the first person crosses.
      lines:
        - {{name: west, start: [0.3, 0.2], end: [0.3, 0.95]}}
        - {{name: middle, start: [0.5, 0.2], end: [0.5, 0.95]}}
        - {{name: east, start: [0.7, 0.2], end: [0.7, 0.95]}}
      rules:
        - {{type: line_crossing, line: west, direction: both}}
        - {{type: line_crossing, line: middle, direction: both}}
        - {{type: line_crossing, line: east, direction: both}}
clips: {{spool: "{folder}/clips", api_url: "{api}", post_roll_s: 2, retry_max_s: 1}}
"""


@pytest.fixture
def clip_api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The alert API, keeping clips in a folder of the test's."""
    monkeypatch.setenv("PATROLNET_CLIP_DIR", str(tmp_path / "centre-clips"))
    (tmp_path / "centre-clips").mkdir()
    with ApiServer(database_url) as server:
        yield server


def edge_key(api: ApiServer) -> str:
    return api.key("edge", site="willow-court")["Authorization"].removeprefix("Bearer ")


def decoded_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data), "r") as container:
        return len(list(container.decode(video=0)))


def changes(database_url: str, alert_id: object) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY seq", [alert_id])
        return [change for (change,) in rows]


def test_a_line_crossing_gets_a_clip_a_police_desk_plays_and_a_fire_desk_cannot_see(
    broker: Service, rtsp_camera: Service, clip_api: ApiServer, database_url: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PATROLNET_EDGE_API_KEY", edge_key(clip_api))
    config = parse_config(NODE.format(broker=broker.url, folder=tmp_path, camera=rtsp_camera.url, api=clip_api.url))
    police, fire = clip_api.key("police"), clip_api.key("fire")
    started = datetime.now(UTC)
    with edge_and_ingest(config, broker, database_url) as node, httpx.Client(base_url=clip_api.url) as http:

        def clip_of_a_crossing() -> tuple[dict, dict] | None:
            # A crossing at least a pre-roll after the start, so the camera's ring holds the pre-roll.
            alerts = http.get("/api/v1/alerts", params={"kind": "security"}, headers=police).json()["items"]
            for alert in alerts:
                late = datetime.fromisoformat(alert["ts"]) > started + timedelta(seconds=7)
                if alert["type"] == "line_crossing" and late:
                    found = http.get(f"/api/v1/alerts/{alert['id']}/clips", headers=police).json()
                    if found:
                        return alert, found[0]
            return None

        try:
            alert, clip = eventually(clip_of_a_crossing, timeout=55, interval=0.5)
        except AssertionError:
            seen = http.get("/api/v1/alerts", params={"kind": "security"}, headers=police).json()["items"]
            clips = node.clips.counters() if node.clips else {}
            pytest.fail(f"no clip of a crossing; alerts {[(a['type'], a['ts']) for a in seen]}, clips {clips}")

        crossed = datetime.fromisoformat(alert["ts"])
        first, last = datetime.fromisoformat(clip["started_at"]), datetime.fromisoformat(clip["ended_at"])
        assert (crossed - first).total_seconds() >= 5.0 - KEY_FRAME_S, "the clip starts a pre-roll before"
        assert (last - crossed).total_seconds() >= 1.5, "and goes on past the crossing, about the post-roll"

        whole = http.get(clip["url"], headers=police)
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert len(whole.content) == clip["bytes"] and whole.content[4:8] == b"ftyp"
        assert whole.content.find(b"moov") < whole.content.find(b"mdat"), "faststart: the index first"
        frames = decoded_frames(whole.content)
        span = (last - first).total_seconds()
        assert abs(frames / 10.0 - span) < 1.5, f"{frames} frames at 10 fps for {span:.1f} s"

        part = http.get(clip["url"], headers={**police, "Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == whole.content[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{clip['bytes']}"

        assert http.get(clip["url"], headers=fire).status_code == 404
        assert http.get(f"/api/v1/alerts/{alert['id']}/clips", headers=fire).status_code == 404
        cap = http.get(f"/api/v1/alerts/{alert['id']}/cap", headers=police).text
        assert "<mimeType>video/mp4</mimeType>" in cap and clip["url"] in cap
        feed = http.get("/api/v1/alerts.cap", headers=police).text
        assert cap.partition("<alert ")[2] in feed, "the feed carries the same message, its clip included"
        assert changes(database_url, alert["id"]).count("clip_ready") == 1


class Uplink:
    """A TCP relay to the API that the test cuts (connections refused, open ones dropped) and restores;
    ``cut_after`` cuts it by itself once that many bytes went upstream."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.up = threading.Event()
        self.cut_after: int | None = None
        self.sent = 0
        self._open: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self.up.clear()
        for sock in self._open:
            sock.close()
        self._open.clear()

    def _accept(self) -> None:
        while True:
            client, _ = self._server.accept()
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted:
                    self.sent += len(data)
                    if self.cut_after is not None and self.sent >= self.cut_after:
                        self.cut_after = None
                        self.cut()
                        return
        except OSError:
            return


def test_a_clip_pending_through_an_uplink_outage_arrives_once_and_whole(
    rtsp_camera: Service, clip_api: ApiServer, database_url: str, tmp_path: Path
) -> None:
    settings = ClipsConfig(
        pre_roll_s=2, post_roll_s=1, spool=tmp_path / "clips", api_url="", chunk_bytes=20_000, retry_max_s=0.3
    )
    spool = ClipSpool(settings.spool, settings.max_spool_bytes)
    recorder = ClipRecorder("cam-walkway", settings, spool.add)
    source = CameraSource("cam-walkway", CaptureConfig(url=rtsp_camera.url), place=CAMERA, node_id="node-1")
    source.attach(recorder)
    uplink = Uplink(clip_api.port)
    uploader = ClipUploader(
        spool, settings.model_copy(update={"api_url": f"http://127.0.0.1:{uplink.port}"}), edge_key(clip_api)
    )
    source.start()
    uploader.start()
    try:
        eventually(lambda: recorder.packets > 40, timeout=20)  # four seconds of video in the ring
        _, alert = raise_alert(database_url, kind=EventKind.SECURITY, place=CAMERA, type="intrusion")
        recorder.mark(alert)
        recorder.mark(alert.model_copy(update={"active": False, "cleared_at": datetime.now(UTC)}))
        [meta] = eventually(spool.pending, timeout=10)
        eventually(lambda: uploader.failures >= 2, timeout=10)  # the uplink is down: it keeps trying

        uplink.cut_after = meta.bytes // 2  # up, and down again halfway through the clip
        uplink.up.set()
        eventually(lambda: not uplink.up.is_set(), timeout=10)
        with psycopg.connect(database_url) as conn:
            (received,) = conn.execute("SELECT received FROM clips WHERE id = %s", [meta.id]).fetchone() or (0,)
        assert 0 < received < meta.bytes, "part of the clip arrived before the cut"
        failures = uploader.failures
        eventually(lambda: uploader.failures > failures, timeout=10)

        uplink.up.set()
        eventually(lambda: not spool.pending(), timeout=20)
    finally:
        uploader.stop()
        source.stop()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id, bytes, sha256, complete FROM clips WHERE alert_id = %s", [alert.id]).fetchall()
    assert rows == [(meta.id, meta.bytes, meta.sha256, True)], "one clip, whole"
    police = clip_api.key("police")
    data = httpx.get(f"{clip_api.url}/api/v1/clips/{meta.id}", headers=police).content
    assert hashlib.sha256(data).hexdigest() == meta.sha256 and decoded_frames(data) >= 30
    assert changes(database_url, alert.id).count("clip_ready") == 1
    assert not list(settings.spool.iterdir()), "nothing left on the node"


def test_retention_prunes_clips_per_kind(clip_api: ApiServer, database_url: str, tmp_path: Path) -> None:
    from alerts.store.clips import prune_clips, retention_days

    folder = tmp_path / "centre-clips"
    kept: list[UUID] = []
    gone: list[UUID] = []
    for kind, bucket in ((EventKind.SECURITY, gone), (EventKind.FIRE, kept)):
        _, alert = raise_alert(database_url, kind=kind, place=CAMERA)
        clip_id = alert.id  # any unique id will do
        (folder / f"{clip_id}.mp4").write_bytes(b"x")
        with psycopg.connect(database_url) as conn:
            conn.execute(
                "INSERT INTO clips (id, alert_id, camera, kind, started_at, ended_at, bytes, sha256, received,"
                " complete, completed_at) VALUES (%s, %s, 'cam', %s, now(), now(), 1, %s, 1, true,"
                " now() - interval '3 days')",
                [clip_id, alert.id, kind.value, "0" * 64],
            )
        bucket.append(clip_id)
    assert prune_clips(database_url, folder, retention_days("security=2,fire=5")) == 1
    assert not (folder / f"{gone[0]}.mp4").exists() and (folder / f"{kept[0]}.mp4").exists()
