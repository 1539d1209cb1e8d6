"""A recheck asks the camera's node for its picture now: on the real broker, ingest, API and an edge node reading the
RTSP stand-in. The request waits for a node that is not there yet and is answered once it runs; the picture is
taken after the request and decodes; a camera the node does not have gets its reason, an unreadable command a dead
letter, and neither stops the node; a request nobody answers expires with the held picture kept."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import psycopg
from api_helpers import JPEG, raise_alert
from conftest import ApiServer, eventually, mqtt_client

from alerts.core.models import EventKind, Place, SnapshotCommand
from alerts.core.protocol import snapshot_topic
from alerts.intake.writer import IngestWorker
from deploy.local.services import Service
from edge.config import parse_config
from edge.node import EdgeNode

SITE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")
CAMERA = SITE.with_device("cam-walkway")
GONE = SITE.with_device("cam-gone")
"""A camera the node reported once, and no longer has."""
NODE = """
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker}"}}
uplink: {{spool: "{spool}", heartbeat_s: 1}}
cameras:
  - {{id: cam-walkway, name: Walkway, capture: {{url: "{camera}"}}, tamper: null, analyse_fps: 1}}
"""


@contextmanager
def ingest(broker: Service, database_url: str) -> Iterator[IngestWorker]:
    """An ingest worker that publishes a pending request again after a second (not 15)."""
    worker = IngestWorker(broker.url, database_url, name="test-ingest", snapshot_again_s=1.0)
    worker.start()
    assert worker.wait_ready()
    try:
        yield worker
    finally:
        worker.stop()


def rechecked_case(api: ApiServer, place: Place) -> tuple[str, dict, datetime]:
    """A camera's enforcement case taken to its recheck: (case url, the recheck's answer, the time before it)."""
    alert = raise_alert(api.database_url, EventKind.ENFORCEMENT, place, snapshot=JPEG, type="zone_occupied")[1]
    desk = api.key("city_management")
    [case] = [c for c in httpx.get(f"{api.url}/api/v1/cases", headers=desk).json() if c["alert_id"] == str(alert.id)]
    url = f"{api.url}/api/v1/cases/{case['id']}"
    assert httpx.post(f"{url}/assign", headers=desk, json={}).status_code == 200
    photo = [("photos", ("stall.jpg", JPEG, "image/jpeg"))]
    assert httpx.post(f"{url}/rectify", headers=desk, data={"note": "cleared"}, files=photo).status_code == 200
    before = datetime.now(UTC)
    rechecked = httpx.post(f"{url}/recheck", headers=desk, data={"note": "looks clear"})
    assert rechecked.status_code == 200, rechecked.text
    return url, rechecked.json(), before


def recheck_step(url: str, api: ApiServer) -> dict:
    steps = httpx.get(url, headers=api.key("city_management")).json()["steps"]
    return next(s for s in steps if s["action"] == "recheck")


def fresh(step: dict) -> list[dict]:
    """The step's pictures taken on request (a held picture names its event)."""
    return [p for p in step["photos"] if p["source"] == "camera" and p["event_id"] is None]


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_recheck_gets_the_picture_the_camera_takes_after_it_from_a_node_that_comes_later(
    broker: Service, rtsp_camera: Service, api: ApiServer, database_url: str, tmp_path: Path
) -> None:
    config = parse_config(NODE.format(broker=broker.url, spool=tmp_path / "outbox.sqlite3", camera=rtsp_camera.url))
    with ingest(broker, database_url):
        url, answer, requested = rechecked_case(api, CAMERA)
        assert answer["picture"] == "requested"
        [held] = answer["steps"][-1]["photos"]
        assert held["source"] == "camera" and held["event_id"] is not None, "the held picture is attached at once"
        assert query(database_url, "SELECT status FROM snapshot_requests") == [("pending",)], "no node runs yet"

        node = EdgeNode(config)
        node.start()
        try:
            assert node.wait_ready()
            [picture] = eventually(lambda: fresh(recheck_step(url, api)), timeout=60, interval=0.5)
            assert datetime.fromisoformat(picture["taken_at"]) > requested, "taken after the recheck asked"
            jpeg = httpx.get(f"{url}/photos/{picture['id']}", headers=api.key("city_management")).content
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None and image.shape[:2] == (576, 768), "the camera's whole frame"
            assert "taken on request" in recheck_step(url, api)["note"]
            [request] = query(database_url, "SELECT status, node_id, photo_id::text FROM snapshot_requests")
            assert request == ("fulfilled", "test-node", picture["id"])

            # A camera the centre last saw on this node, which the node no longer has: it says so.
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO devices (site, device, node_id, sub_district, community, grid, type, online,"
                    " heartbeat_at) VALUES (%s, %s, 'test-node', %s, %s, %s, 'camera', false, '2001-01-01')",
                    (GONE.site, GONE.device, GONE.sub_district, GONE.community, GONE.grid),
                )
            gone_url, _, _ = rechecked_case(api, GONE)
            eventually(lambda: "gave no fresh picture" in recheck_step(gone_url, api)["note"], timeout=30)
            reasons = query(database_url, "SELECT status, reason FROM snapshot_requests WHERE device = 'cam-gone'")
            assert reasons == [("failed", "node test-node has no camera 'cam-gone' with a frame")]
            assert [p["event_id"] is not None for p in recheck_step(gone_url, api)["photos"]] == [True]

            # An unreadable command is the node's dead letter; the node answers the next one.
            topic = snapshot_topic(SITE.site, "test-node")
            with mqtt_client(broker, "test-poisoner") as poisoner:
                poisoner.publish(topic, b'{"request_id": "nope"}', qos=1).wait_for_publish(timeout=5)
            sql = "SELECT reason FROM dead_letters WHERE topic = %s"
            [(reason,)] = eventually(lambda: query(database_url, sql, (topic,)), timeout=30)
            assert "unreadable snapshot command" in reason
            # An answer to a request the centre never made is a dead letter of ingest's store.
            unasked = SnapshotCommand(request_id=held["id"], camera="cam-walkway")
            node.snapshots.handle(topic, unasked.model_dump_json().encode())
            sql = "SELECT reason FROM dead_letters WHERE source = 'store' AND topic LIKE '%%/snapshot'"
            [(reason,)] = eventually(lambda: query(database_url, sql), timeout=30)
            assert f"no snapshot request {held['id']}" in reason
            assert not node.failed.is_set() and node.counts["snapshots_sent"] >= 2
        finally:
            node.stop()
    changes = query(database_url, "SELECT count(*) FROM alert_changes WHERE change = 'case_picture'")
    assert changes == [(2,)], "the fresh picture and the refusal each changed their case"


def test_a_request_no_node_answers_expires_and_the_held_picture_stays(
    broker: Service, api: ApiServer, database_url: str
) -> None:
    with ingest(broker, database_url) as worker:
        url, answer, _ = rechecked_case(api, CAMERA)
        assert answer["picture"] == "requested"
        eventually(lambda: query(database_url, "SELECT publishes > 1 FROM snapshot_requests") == [(True,)], timeout=15)
        assert worker.snapshots.published == 0, "no node reports the camera: nothing to publish to"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE snapshot_requests SET expires_at = now()")
        eventually(lambda: "no fresh picture from camera cam-walkway" in recheck_step(url, api)["note"], timeout=15)
    assert query(database_url, "SELECT status, reason FROM snapshot_requests") == [
        ("expired", "no node reports camera cam-walkway")
    ]
    [held] = recheck_step(url, api)["photos"]
    assert held["event_id"] is not None, "the held picture stays"
