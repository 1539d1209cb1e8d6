"""One detector worker for all cameras of a node, batching frames across them.

Each camera has a small bounded queue; a camera that submits faster than the
model keeps up loses its oldest frame (counted), never blocks its reader and
never delays another camera. The worker takes the oldest waiting frame of up
to ``max_batch`` different cameras and runs them through the model in one call,
so a node with many cameras pays for fewer, larger forward passes.

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

log = logging.getLogger(__name__)

ResultCallback = Callable[[str, Any, Detections], None]
"""Called with (camera id, the item submitted with the frame, its detections), in the worker's thread."""


@dataclass
class CameraStats:
    dropped: int = 0
    detected: int = 0


@dataclass
class WorkerStats:
    batches: int = 0
    frames: int = 0
    busy_s: float = 0.0

    @property
    def mean_batch(self) -> float:
        return self.frames / self.batches if self.batches else 0.0


class DetectorWorker:
    def __init__(self, backend: Backend, on_result: ResultCallback, max_batch: int = 4, queue_depth: int = 2) -> None:
        self.backend = backend
        self.on_result = on_result
        self.max_batch = max_batch
        self.queue_depth = queue_depth
        self.stats: dict[str, CameraStats] = {}
        self.totals = WorkerStats()
        self._queues: dict[str, deque[tuple[float, Any, np.ndarray]]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="detector", daemon=True)

    def submit(self, camera_id: str, item: Any, image: np.ndarray) -> None:
        """Queues a frame for detection; never blocks. A full queue loses its oldest frame."""
        with self._cond:
            waiting = self._queues.setdefault(camera_id, deque())
            stats = self.stats.setdefault(camera_id, CameraStats())
            if len(waiting) >= self.queue_depth:
                waiting.popleft()
                stats.dropped += 1
            waiting.append((time.monotonic(), item, image))
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _take_batch(self) -> list[tuple[str, Any, np.ndarray]]:
        """The oldest waiting frame of each of up to max_batch cameras, longest-waiting cameras first."""
        heads = sorted((q[0][0], cam) for cam, q in self._queues.items() if q)
        batch = []
        for _, cam in heads[: self.max_batch]:
            _, item, image = self._queues[cam].popleft()
            batch.append((cam, item, image))
        return batch

    def run_once(self) -> int:
        """Detects one batch if frames wait; returns how many frames it handled."""
        with self._cond:
            batch = self._take_batch()
        if not batch:
            return 0
        started = time.perf_counter()
        results = self.backend.detect([image for _, _, image in batch])
        self.totals.busy_s += time.perf_counter() - started
        self.totals.batches += 1
        self.totals.frames += len(batch)
        for (cam, item, _), detections in zip(batch, results, strict=True):
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
            try:
                self.run_once()
            except Exception:
                # A model or rule failure on one batch must not stop detection for every camera.
                log.exception("detector batch failed; going on with the next")
