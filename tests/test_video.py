"""The video hot loop end to end: a real RTSP camera looping real footage, the real offline model.

The zone covers the walkway of vtest.avi, where people walk all through the clip; the line crosses it.
"""

from __future__ import annotations

import queue
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import _service_folder, eventually

from alerts.core.models import Event, EventKind, EventState, Place
from deploy.local.services import Service, start_rtsp
from detectors.backend import BackendConfig
from detectors.load import load_backend
from detectors.visual_fire import VisualFire, VisualFireConfig
from edge.cameras import CameraConfig, DetectorConfig
from edge.video import VideoPipeline

SITE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")
WALKWAY = [[0, 0.33], [0.45, 0.36], [1, 0.40], [1, 0.85], [0.45, 0.55], [0, 0.45]]
SCENE = {
    "zones": [{"name": "walkway", "polygon": WALKWAY}],
    "lines": [{"name": "middle", "start": [0.5, 0.2], "end": [0.5, 0.95]}],
    "rules": [
        {"type": "intrusion", "zone": "walkway"},
        {"type": "line_crossing", "line": "middle", "direction": "both"},
    ],
}


def camera(url: str, **changes: object) -> CameraConfig:
    settings: dict = {
        "id": "cam-walkway",
        "name": "Walkway",
        "capture": {"url": url, "offline_grace_s": 2.0, "stale_after_s": 1.5, "backoff_max_s": 1.0},
        "scene": SCENE,
        "tamper": None,
    }
    return CameraConfig.model_validate(settings | changes)


class Collector:
    def __init__(self) -> None:
        self.events: queue.Queue[Event] = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.events.put(event)

    def wait_for(self, match, timeout: float) -> Event:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if match(event):
                return event
        pytest.fail(f"no matching event within {timeout} s")


def run(cameras: list[CameraConfig], emit: Collector) -> VideoPipeline:
    pipeline = VideoPipeline(cameras, DetectorConfig(), SITE, "test-node", "UTC", emit)
    pipeline.start()
    return pipeline


def test_people_on_the_walkway_raise_intrusions_and_the_camera_recovers(rtsp_camera: Service, footage: Path) -> None:
    emit = Collector()
    pipeline = run([camera(rtsp_camera.url)], emit)
    try:
        intrusion = emit.wait_for(lambda e: e.type == "intrusion" and e.state is EventState.START, 30)
        assert intrusion.kind is EventKind.SECURITY and intrusion.place.device == "cam-walkway"
        assert intrusion.attributes["class"] == "person" and intrusion.attributes["zone"] == "walkway"
        assert intrusion.subject and intrusion.condition == str(intrusion.attributes["track_id"])
        assert intrusion.snapshot is not None, "an intrusion carries a picture"
        snapshot = cv2.imdecode(np.frombuffer(intrusion.snapshot, np.uint8), cv2.IMREAD_COLOR)
        assert snapshot is not None and snapshot.shape == (576, 768, 3)
        crossing = emit.wait_for(lambda e: e.type == "line_crossing", 60)
        assert crossing.state is EventState.INSTANT and crossing.attributes["direction"] in ("in", "out")

        port = rtsp_camera.port
        rtsp_camera.stop()
        killed = time.monotonic()
        offline = emit.wait_for(lambda e: e.type == "camera_offline", 10)
        assert offline.state is EventState.START and time.monotonic() - killed < 2.0 + 3.0
        detected = pipeline.cameras["cam-walkway"].counts.detected

        with start_rtsp(footage, _service_folder("patrolnet-rtsp-"), port=port):
            online = emit.wait_for(lambda e: e.type == "camera_offline", 20)
            assert online.state is EventState.END
            eventually(lambda: pipeline.cameras["cam-walkway"].counts.detected > detected + 10, timeout=20)
        stats = pipeline.stats()["cam-walkway"]
        assert stats["reconnects"] >= 1 and stats["detected"] > 10
        assert stats["detected"] <= stats["analysed"] - stats["gated_out"], "only frames with motion are detected"
    finally:
        pipeline.stop()


@pytest.fixture(scope="module")
def blurred_clip(footage: Path) -> Path:
    """The footage, sharp for its first 12 s, then heavily blurred: a defocused or smeared camera."""
    out = _service_folder("patrolnet-blur-") / "blurred.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-r", "10", "-i", str(footage), "-an", "-c:v", "libx264",
         "-bf", "0", "-vf", "boxblur=12:2:enable='gte(t,12)'", "-t", "40", str(out)],
        check=True,
    )  # fmt: skip
    return out


def test_a_blurred_camera_raises_a_defocus_event(blurred_clip: Path) -> None:
    emit = Collector()
    tamper = {"interval_s": 0.5, "learn_s": 5, "confirm_s": 3, "clear_s": 3}
    config = camera(str(blurred_clip), capture={"url": str(blurred_clip)}, tamper=tamper, scene={})
    pipeline = run([config], emit)
    try:
        event = emit.wait_for(lambda e: e.kind is EventKind.TROUBLE and e.state is EventState.START, 40)
        assert event.type == "camera_defocused"
        assert event.snapshot
    finally:
        pipeline.stop()


def test_a_fire_model_through_a_backend_raises_fire_events(yolo11n: dict, tmp_path: Path) -> None:
    """A fire/smoke model's classes become fire events through the ordinary backends.

    No fire/smoke model can be had offline here, so this one is YOLO11n untrained with its 80 classes named
    fire and smoke: its near-zero-score boxes prove the plumbing from backend to fire Event, not accuracy.
    """
    names = tmp_path / "fire.names"
    names.write_text("\n".join(["fire", "smoke"] * 40) + "\n")
    backend = load_backend(
        BackendConfig(kind="ultralytics", model=yolo11n["pt"][0], names=names, input_size=320, score=1e-6)
    )
    place = SITE.with_device("cam-yard")
    watch = VisualFire(VisualFireConfig(min_score=0.0, hold_s=1.0), place, source="test-node")
    capture = cv2.VideoCapture("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
    events: list[Event] = []
    for second in range(4):
        ok, frame = capture.read()
        assert ok
        events += watch.process(frame, backend.detect([frame])[0], ts=float(second))
    capture.release()
    assert events and {e.type for e in events} <= {"visual_flame", "visual_smoke"}
    assert all(e.kind is EventKind.FIRE and e.state is EventState.START and e.snapshot for e in events)
    assert all(e.place == place for e in events)
