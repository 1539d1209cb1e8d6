"""The real footage the detector tests share: vtest.avi from Debian's opencv-doc, read frame by frame.

vtest.avi is 768x576 at 10 fps, 795 frames: pedestrians on a walkway, a parked van and a car.
``detect_clip`` runs the offline detector over it once per test session and keeps the result.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.backend import offline_default
from detectors.detections import Detections
from detectors.load import load_backend

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VTEST = DATA / "vtest.avi"
FPS = 10.0
STRIDE = 2
"""Every second frame (5 fps): half the detector's time, and still a frame every 20 cm of walking."""


def vtest_frames(stride: int = STRIDE) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) of every ``stride``-th frame of vtest.avi, one at a time."""
    if not VTEST.exists():
        pytest.fail(f"{VTEST} is missing: install Debian's opencv-doc (`make setup` does)")
    capture = cv2.VideoCapture(str(VTEST))
    try:
        index = 0
        while capture.grab():
            if index % stride == 0:
                ok, frame = capture.retrieve()
                assert ok
                yield index, frame
            index += 1
    finally:
        capture.release()


@functools.cache
def detect_clip(stride: int = STRIDE) -> list[tuple[int, Detections]]:
    """The darknet backend's detections of vtest.avi, batched as the detector worker batches them.

    Cached: the rule tests replay the same detections, and the detector is most of the time spent.
    """
    backend = load_backend(offline_default())
    out: list[tuple[int, Detections]] = []
    batch: list[tuple[int, np.ndarray]] = []
    for item in vtest_frames(stride):
        batch.append(item)
        if len(batch) == 4:
            out += zip([i for i, _ in batch], backend.detect([f for _, f in batch]), strict=True)
            batch = []
    if batch:
        out += zip([i for i, _ in batch], backend.detect([f for _, f in batch]), strict=True)
    return out
