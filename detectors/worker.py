"""One detector worker for all cameras of a node, batching frames across them.

Each camera has a small bounded queue; a camera that submits faster than the
model keeps up loses its oldest frame (counted), never blocks its reader and
never delays another camera. The worker takes the oldest waiting frame of up
to ``max_batch`` different cameras and runs them through the model in one call,
so a node with many cameras pays for fewer, larger forward passes.

A frame is submitted as its image, or as a function that makes it: a camera's
decoded picture is converted to BGR only if the worker looks at it (most frames
of a busy camera are dropped for a newer one before a look).

Given a :class:`~detectors.regions.RegionDetector`, frames submitted with
their motion boxes are looked at in regions around the motion (the crops of
every camera of a batch in one call) where that is cheaper than the whole frame.

A batch that raises (a model or rule failure) is counted, handed to
``on_error`` with the cameras it held, and the worker goes on with the next.
``busy_s(now)`` and ``idle_s(now)`` tell a supervisor whether the worker is
stuck in one batch; ``restart()`` starts a new thread after the old one died.

Example:
    >>> import numpy as np
    >>> class Nothing:
    ...     names = ["person"]
    ...     def detect(self, frames):
    ...         return [Detections.empty() for _ in frames]
    >>> results = []
    >>> worker = DetectorWorker(Nothing(), lambda cam, item, dets: results.append((cam, item, len(dets))))
    >>> worker.submit("cam-1", "frame-1", np.zeros((4, 4, 3), np.uint8))
    >>> worker.submit("cam-1", "frame-2", np.zeros((4, 4, 3), np.uint8))
    >>> worker.submit("cam-1", "frame-3", np.zeros((4, 4, 3), np.uint8))
    >>> worker.run_once()
    1
    >>> results, worker.stats["cam-1"].dropped
    ([('cam-1', 'frame-2', 0)], 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.backend import Backend
from detectors.detections import Detections
from detectors.regions import RegionDetector

log = logging.getLogger(__name__)

ResultCallback = Callable[[str, Any, Detections], None]
"""Called with (camera id, the item submitted with the frame, its detections), in the worker's thread."""
Image = np.ndarray | Callable[[], np.ndarray]
"""A frame's image, or a function that makes it when the worker looks at the frame."""
ErrorCallback = Callable[[list[str], Exception], None]
"""Called with (the cameras of a batch that failed, what it raised), in the worker's thread."""


@dataclass
class CameraStats:
    dropped: int = 0
    detected: int = 0


@dataclass
class WorkerStats:
    batches: int = 0
    frames: int = 0
    busy_s: float = 0.0
    failed: int = 0

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


class DetectorWorker:
    def __init__(
        self,
        backend: Backend,
        on_result: ResultCallback,
        max_batch: int = 4,
        queue_depth: int = 2,
        on_error: ErrorCallback | None = None,
        regions: RegionDetector | None = None,
    ) -> None:
        self.backend = backend
        self.regions = regions
        self.on_result = on_result
        self.on_error = on_error
        self.max_batch = max_batch
        self.queue_depth = queue_depth
        self.stats: dict[str, CameraStats] = {}
        self.totals = WorkerStats()
        self._queues: dict[str, deque[tuple[float, Any, Image, np.ndarray | None]]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._busy_since: float | None = None
        self._in_hand: set[str] = set()
        self._last_batch = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)

    def submit(self, camera_id: str, item: Any, image: Image, motion: np.ndarray | None = None) -> None:
        """Queues a frame for detection; never blocks. A full queue loses its oldest frame.

        ``motion``: the frame's motion boxes, for a worker that detects on regions; None looks at the whole frame.
        """
        with self._cond:
            waiting = self._queues.setdefault(camera_id, deque())
            stats = self.stats.setdefault(camera_id, CameraStats())
            if len(waiting) >= self.queue_depth:
                waiting.popleft()
                stats.dropped += 1
            waiting.append((time.monotonic(), item, image, motion))
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def restart(self) -> None:
        """A new thread after the old one died; frames waiting are kept."""
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)
        self._thread.start()

    def busy_s(self, now: float) -> float:
        """How long the batch in hand has run; 0 between batches."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, now - since)

    def idle_s(self, now: float) -> float:
        """Seconds since the last batch ended."""
        return max(0.0, now - self._last_batch)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _take_batch(self) -> list[tuple[str, Any, Image, np.ndarray | None]]:
        """The oldest waiting frame of each of up to max_batch cameras, longest-waiting cameras first."""
        heads = sorted((q[0][0], cam) for cam, q in self._queues.items() if q)
        batch = []
        for _, cam in heads[: self.max_batch]:
            _, item, image, motion = self._queues[cam].popleft()
            batch.append((cam, item, image, motion))
        return batch

    def _detect(self, batch: list[tuple[str, Any, Image, np.ndarray | None]]) -> list[Detections]:
        images = [image() if callable(image) else image for _, _, image, _ in batch]
        if self.regions is None:
            return self.backend.detect(images)
        now = time.monotonic()
        plans = [
            self.regions.plan(cam, image.shape, motion, now)
            for (cam, _, _, motion), image in zip(batch, images, strict=True)
        ]
        return self.regions.run(images, plans)

    def run_once(self) -> int:
        """Detects one batch if frames wait; returns how many frames it handled."""
        with self._cond:
            batch = self._take_batch()
        self._in_hand = {cam for cam, _, _, _ in batch}
        if not batch:
            return 0
        started = time.perf_counter()
        results = self._detect(batch)
        self.totals.busy_s += time.perf_counter() - started
        self.totals.batches += 1
        self.totals.frames += len(batch)
        for (cam, item, _, _), detections in zip(batch, results, strict=True):
            self.stats[cam].detected += 1
            self.on_result(cam, item, detections)
        return len(batch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not any(self._queues.values()):
                    self._cond.wait(timeout=1.0)
                if self._stopping:
                    return
            self._busy_since = time.monotonic()
            try:
                self.run_once()
            except Exception as exc:
                # A model or rule failure on one batch must not stop detection for every camera.
                log.exception("detector batch failed; going on with the next")
                self._failed(exc)
            finally:
                self._busy_since = None
                self._last_batch = time.monotonic()

    def _failed(self, exc: Exception) -> None:
        self.totals.failed += 1
        if self.on_error is None:
            return
        try:
            self.on_error(sorted(self._in_hand), exc)
        except Exception:
            log.exception("detector: reporting a failed batch failed")
