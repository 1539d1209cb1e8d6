"""The video hot loop of a node: every camera, one shared detector, events out.

    CameraSource --Frame--> tamper check --> motion gate --> DetectorWorker (batched across cameras)
        --> filter --> Tracker --> RuleEngine / VisualFire --Event--> emit

Each camera has a thread that drains its source and decides, cheaply, whether
the frame is worth the detector; the one detector worker takes frames of
several cameras per forward pass and runs the per-camera tracker and rules on
the results. Queues are bounded and drop the oldest frame, never block.

A camera's offline/online and tamper events go out from its own thread; the
rest from the detector's thread. ``emit`` must therefore be thread-safe.

A frame that makes the tamper check, the motion gate, the tracker or the
rules raise is counted (``frame_errors``) and handed to ``letter`` with the
reason (the node turns it into a dead letter); the camera goes on with the
next frame. ``watch(supervisor)`` registers each camera's feed thread
(restarted if it dies; its liveness is the last frame handled) and the
detector (its liveness is the last batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from alerts.core.models import Event, Place
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.motion import MotionGate
from detectors.regions import region_detector
from detectors.rules import RuleEngine
from detectors.snapshot import mosaic
from detectors.tamper import TamperDetector
from detectors.tracking import Tracker
from detectors.visual_fire import VisualFire
from detectors.worker import DetectorWorker
from edge.cameras import CameraConfig, DetectorConfig
from edge.supervisor import Liveness, Supervisor
from ingest.capture import CameraSource, Frame

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]
Letter = Callable[[str, str], None]
"""Called with (the camera's topic, e.g. ``camera/gate``, why its frame failed)."""


def camera_topic(camera_id: str) -> str:
    return f"camera/{camera_id}"


@dataclass
class CameraCounts:
    analysed: int = 0
    gated_out: int = 0
    detected: int = 0
    events: int = 0
    frame_errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    """Seconds from a frame's capture to each event it raised (the newest 1,000)."""


class CameraPipeline:
    """One camera's state: its source, gate, tracker and rules."""

    def __init__(self, config: CameraConfig, place: Place, node_id: str, timezone: str, emit: Emit) -> None:
        self.config = config
        self.emit = emit
        self.counts = CameraCounts()
        self.source = CameraSource(
            config.id, config.capture, place=place, node_id=node_id, name=config.name, on_event=emit
        )
        self.gate = MotionGate(config.motion)
        self.tamper = TamperDetector(place, node_id, config.tamper) if config.tamper else None
        self.tracker = Tracker(config.tracker)
        self.rules = RuleEngine(config.scene, place, node_id, timezone=timezone)
        self.fire = VisualFire(config.fire, place, node_id) if config.fire else None
        self.liveness = Liveness()
        self._next_analysis = 0.0

    def wants(self, frame: Frame) -> bool:
        """Whether this frame goes further: the analysis rate, tamper checks, and the motion gate."""
        if self.config.analyse_fps is not None:
            if frame.monotonic < self._next_analysis:
                return False
            self._next_analysis = frame.monotonic + 1.0 / self.config.analyse_fps
        self.counts.analysed += 1
        ts = frame.ts.timestamp()
        if self.tamper is not None:
            for event in self.tamper.process(frame.grey, ts):
                self._send(event, frame)
        if self.gate.check(frame.grey, ts):
            return True
        self.counts.gated_out += 1
        return False

    def on_detections(self, frame: Frame, detections: Detections) -> None:
        """Tracks and rules for one detected frame; runs on the detector's thread."""
        self.counts.detected += 1
        ts = frame.ts.timestamp()
        events = self.fire.process(frame.image, detections, ts) if self.fire else []
        kept = self.config.filter.apply(detections, (frame.height, frame.width, 3))
        tracked = self.tracker.update(kept, ts)
        events += self.rules.process(frame.image, tracked, ts)
        for event in events:
            self._send(event, frame)

    def _send(self, event: Event, frame: Frame) -> None:
        self.counts.events += 1
        self.counts.latencies_s.append(time.monotonic() - frame.monotonic)
        del self.counts.latencies_s[:-1000]
        self.emit(event)


class VideoPipeline:
    """All cameras of a node and their shared detector; ``start()``, then ``stop()``."""

    def __init__(
        self,
        cameras: list[CameraConfig],
        detector: DetectorConfig,
        site_place: Place,
        node_id: str,
        timezone: str,
        emit: Emit,
        letter: Letter | None = None,
    ) -> None:
        self.cameras = {c.id: CameraPipeline(c, site_place.with_device(c.id), node_id, timezone, emit) for c in cameras}
        self.letter = letter
        backend = load_backend(detector.backend)
        self.worker = DetectorWorker(
            backend,
            self._on_result,
            max_batch=detector.max_batch,
            queue_depth=detector.queue_depth,
            on_error=self._on_batch_error,
            regions=region_detector(backend, detector.backend, detector.regions),
        )
        self._stopping = threading.Event()
        self._threads = {cid: self._feed_thread(camera) for cid, camera in self.cameras.items()}

    def _feed_thread(self, camera: CameraPipeline) -> threading.Thread:
        return threading.Thread(target=self._feed, args=(camera,), name=f"camera-{camera.config.id}", daemon=True)

    def start(self) -> None:
        self.worker.start()
        for camera in self.cameras.values():
            camera.source.start()
        for thread in self._threads.values():
            thread.start()
        log.info("video pipeline running %d cameras", len(self.cameras))

    def stop(self) -> None:
        self._stopping.set()
        for camera in self.cameras.values():
            camera.source.stop()
        for thread in self._threads.values():
            thread.join(timeout=10)
        self.worker.stop()

    def watch(self, supervisor: Supervisor, stuck_after_s: float) -> None:
        """Registers each camera's feed and the shared detector with the node's supervisor."""
        for cid, camera in self.cameras.items():
            supervisor.watch(
                f"camera-{cid}",
                alive=partial(self._feed_alive, cid),
                restart=partial(self._restart_feed, cid),
                liveness=camera.liveness,
                stuck_after_s=stuck_after_s,
                critical=False,
            )
        supervisor.watch(
            "detector",
            alive=self.worker.alive,
            restart=self.worker.restart,
            liveness=self.worker,
            stuck_after_s=stuck_after_s,
        )

    def _feed_alive(self, camera_id: str) -> bool:
        return self._threads[camera_id].is_alive() or self.cameras[camera_id].source.ended

    def _restart_feed(self, camera_id: str) -> None:
        self._threads[camera_id] = thread = self._feed_thread(self.cameras[camera_id])
        thread.start()

    def _feed(self, camera: CameraPipeline) -> None:
        while not self._stopping.is_set():
            frame = camera.source.get(timeout=0.5)
            if frame is None:
                if camera.source.ended:
                    return
                continue
            with camera.liveness.working():
                try:
                    if camera.wants(frame):
                        motion = camera.gate.motion_boxes if self.worker.regions and camera.gate.motion else None
                        self.worker.submit(frame.camera_id, frame, frame.bgr, motion)
                except Exception as exc:
                    log.exception("camera %s: frame %d failed", camera.config.id, frame.seq)
                    self._frame_failed(camera, exc)

    def _frame_failed(self, camera: CameraPipeline, exc: Exception) -> None:
        camera.counts.frame_errors += 1
        if self.letter is not None:
            self.letter(camera_topic(camera.config.id), f"frame failed: {type(exc).__name__}: {exc}")

    def _on_batch_error(self, camera_ids: list[str], exc: Exception) -> None:
        for cid in camera_ids:
            self._frame_failed(self.cameras[cid], exc)

    def _on_result(self, camera_id: str, frame: Frame, detections: Detections) -> None:
        camera = self.cameras[camera_id]
        try:
            camera.on_detections(frame, detections)
        except Exception as exc:
            # One camera's tracker or rules failing costs that frame, not the rest of the batch.
            log.exception("camera %s: tracking or rules failed on frame %d", camera_id, frame.seq)
            self._frame_failed(camera, exc)

    def latest(self, camera_id: str) -> tuple[Frame, str] | None:
        """The newest frame of a camera and a label for it (its name and time); None for no camera or no frame."""
        camera = self.cameras.get(camera_id)
        frame = camera.source.latest() if camera else None
        if camera is None or frame is None:
            return None
        return frame, f"{camera.config.name or camera_id} {frame.ts:%H:%M:%S} UTC"

    def snapshot(self, camera_ids: list[str]) -> bytes | None:
        """One JPEG of the newest frame of each of these cameras, side by side; None if none has a frame."""
        tiles = []
        for cid in camera_ids:
            found = self.latest(cid)
            if found is not None:
                tiles.append((found[0].image, found[1]))
        return mosaic(tiles) if tiles else None

    def detector_counters(self) -> dict[str, float]:
        """How the shared detector keeps up: batches, frames per batch, and seconds spent in the model."""
        totals = self.worker.totals
        return {
            "detector_batches": totals.batches,
            "detector_mean_batch": round(totals.mean_batch, 2),
            "detector_busy_s": round(totals.busy_s, 1),
        }

    def stats(self) -> dict[str, dict[str, float]]:
        """Per camera: capture, gate and detector counters, for heartbeats and benchmarks."""
        out = {}
        for cid, camera in self.cameras.items():
            capture = camera.source.stats()
            worker = self.worker.stats.get(cid)
            out[cid] = {
                "online": float(capture.online),
                "fps": capture.fps,
                "frames_read": capture.frames_read,
                "frames_dropped": capture.frames_dropped + (worker.dropped if worker else 0),
                "reconnects": capture.reconnects,
                "packets_damaged": capture.damaged,
                "packet_sink_failures": capture.sink_failures,
                "analysed": camera.counts.analysed,
                "gated_out": camera.counts.gated_out,
                "detected": camera.counts.detected,
                "events": camera.counts.events,
                "frame_errors": camera.counts.frame_errors,
            }
        return out
