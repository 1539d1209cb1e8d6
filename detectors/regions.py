"""Detecting on regions around motion instead of whole frames, after Frigate.

A busy camera's motion rarely covers the whole view: people on a walkway fill
a band of it. The detector's cost grows with the pixels it is fed, so
feeding it crops around the motion at a small input buys more looks a second
than feeding it the whole frame at the default input.

Frigate cuts squares of at least the model's input around motion. Here the
full-frame look squeezes a 640x480 frame into a 416 square (objects at 0.65 of
their width, 0.87 of their height), and a square region at 256 seen at
another scale and aspect lost 12% of the people the full look finds on
vtest.avi. So a region is a window of the frame's own shape, the region input
over the full input of it (256 of 416: 394x295 of 640x480, 38% of the area),
squeezed into the region input exactly as the frame is into the full one:
each object reaches the network at the scale and aspect of a full-frame look.

From a frame's motion boxes (:attr:`detectors.motion.MotionGate.motion_boxes`):

1. each box grows by a margin and gets the window centred on it, shifted
   inside the frame (:func:`window_around`);
2. boxes whose windows overlap share one window when together they fit in
   it; otherwise each keeps its own, and NMS settles what both found
   (:func:`build_regions`);
3. when one box does not fit a window, or the windows would cost the model
   as much as the full frame (their count times the region input's pixels
   against the full input's), the frame goes whole.

The crops of every frame of a batch (several cameras) go through the region
model in one call; boxes are shifted back into frame pixels and
de-duplicated across overlapping regions by per-class NMS
(:func:`merge_regions`). A frame without motion (the gate's periodic
refresh) goes whole, and so does a camera's frame once ``full_every_s`` has
passed since its last whole one, so that a person standing still in a busy
view is still seen.

Example:
    >>> import numpy as np
    >>> window_around(np.array([100, 100, 140, 200]), (394, 295), (480, 640))
    (0, 2, 394, 297)
    >>> build_regions(np.array([[10, 10, 50, 90], [60, 20, 100, 120], [560, 380, 600, 470]]), (480, 640), (394, 295))
    [(0, 0, 394, 295), (246, 185, 640, 480)]
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from alerts.core.config import ConfigModel
from detectors.backend import Backend, BackendConfig
from detectors.detections import Detections

log = logging.getLogger(__name__)

_CELL = 32
"""The stride of a YOLO network's coarsest grid, in network pixels."""

Region = tuple[int, int, int, int]
"""x1, y1, x2, y2 of a crop, in frame pixels."""


class RegionConfig(ConfigModel):
    """Whether the detector looks at whole frames or at regions around motion, and how large they are."""

    mode: Literal["regions", "full"] = Field(
        default="regions",
        title="Detection mode",
        description="regions: the detector sees crops around motion at the region input (cheaper, more "
        "looks a second); full: every look is the whole frame at the backend's input size.",
    )
    input_size: int = Field(
        default=256,
        ge=32,
        multiple_of=32,
        title="Region input size",
        description="Side in pixels of the square the network sees for a region. A region is the part of the frame "
        "this input over the full input (with the default 256 of 416: 62% of its width and height, 38% of its area), "
        "so objects look as they do in a full-frame look, at 38% of its cost.",
    )
    margin: float = Field(
        default=0.2,
        ge=0,
        le=2,
        title="Margin",
        description="Share of a motion box's larger side added on every side before its region is cut, so that "
        "the whole of a person whose legs alone moved is in view.",
    )
    full_every_s: float = Field(
        default=2.0,
        gt=0,
        title="Full-frame period",
        description="Seconds after which a camera's next look is a whole frame even with motion, so that what "
        "stands still in a busy view stays tracked.",
    )


def window_around(
    content: np.ndarray, window: tuple[int, int], frame_shape: tuple[int, ...], snap: tuple[float, float] = (1, 1)
) -> Region:
    """The ``window`` (width, height) around ``content`` (x1, y1, x2, y2), inside the frame, its corner on ``snap``.

    The corner sits on a multiple of ``snap`` (frame pixels), the one nearest to centring the content that
    still covers it where one does: with the full look's cell (32 network pixels) as ``snap``, the region's
    grid of cells falls on the full frame's, and the network sees the very same cells.
    """
    height, width = frame_shape[:2]
    win_w, win_h = min(window[0], width), min(window[1], height)
    corner = []
    for low, high, win, side, step in (
        (content[0], content[2], win_w, width, snap[0]),
        (content[1], content[3], win_h, height, snap[1]),
    ):
        start = min(max(0.0, (low + high - win) / 2), side - win)
        options = [math.floor(start / step) * step, math.ceil(start / step) * step]
        options = [min(max(0.0, o), side - win) for o in options]
        covering = [o for o in options if o <= low and o + win >= high] or options
        corner.append(round(min(covering, key=lambda o: abs(o - start))))
    return (corner[0], corner[1], corner[0] + win_w, corner[1] + win_h)


def _fits(content: np.ndarray, window: tuple[int, int]) -> bool:
    return bool(content[2] - content[0] <= window[0] and content[3] - content[1] <= window[1])


def _overlap(a: Region, b: Region) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def build_regions(
    boxes: np.ndarray,
    frame_shape: tuple[int, ...],
    window: tuple[int, int],
    margin: float = 0.2,
    snap: tuple[float, float] = (1, 1),
) -> list[Region] | None:
    """Windows of ``window`` (width, height) pixels covering every motion box plus its margin.

    Boxes whose windows overlap share one window when together they fit in it; otherwise they keep their own
    and NMS settles what both found. None when one box with its margin does not fit a window: the frame
    should go whole.
    """
    contents = []
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        grow = margin * max(box[2] - box[0], box[3] - box[1])
        content = np.concatenate([box[:2] - grow, box[2:] + grow])
        if not _fits(content, window):
            return None
        contents.append(content)
    merged = True
    while merged:
        merged = False
        for i, j in itertools.combinations(range(len(contents)), 2):
            both = np.concatenate(
                [np.minimum(contents[i][:2], contents[j][:2]), np.maximum(contents[i][2:], contents[j][2:])]
            )
            near = _overlap(
                window_around(contents[i], window, frame_shape, snap),
                window_around(contents[j], window, frame_shape, snap),
            )
            if near and _fits(both, window):
                contents[i] = both
                del contents[j]
                merged = True
                break
    return sorted(window_around(c, window, frame_shape, snap) for c in contents)


def merge_regions(found: Sequence[tuple[Region, Detections]], nms: float) -> Detections:
    """One frame's detections from those of its regions: shifted into frame pixels, per-class NMS across regions."""
    parts = [d for _, d in found if len(d)]
    if not parts:
        return Detections.empty()
    xyxy = np.concatenate([d.xyxy + np.array([r[0], r[1], r[0], r[1]], np.float32) for r, d in found if len(d)])
    confidence = np.concatenate([d.confidence for d in parts])
    names = np.concatenate([d.class_name for d in parts])
    _, classes = np.unique(names, return_inverse=True)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    # OpenCV's stubs ask for sequences; the binding takes arrays.
    kept = cv2.dnn.NMSBoxesBatched(xywh, confidence, classes.astype(np.int32), 0.0, nms)  # type: ignore[arg-type]
    chosen = np.sort(np.asarray(kept, dtype=np.int64).reshape(-1))
    return Detections(xyxy=xyxy[chosen], confidence=confidence[chosen], class_name=names[chosen])


def matched(reference: np.ndarray, found: np.ndarray, iou: float = 0.5) -> int:
    """How many ``reference`` boxes (N, 4 xyxy) some ``found`` box overlaps by IoU ``iou`` or more.

    How region looks are judged against full-frame ones: the share of its boxes they also find.

    >>> matched(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([[1, 1, 10, 11]]))
    1
    """
    if not len(reference) or not len(found):
        return 0
    top_left = np.maximum(reference[:, None, :2], found[None, :, :2])
    bottom_right = np.minimum(reference[:, None, 2:], found[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_r = np.prod(reference[:, 2:] - reference[:, :2], axis=1)
    area_f = np.prod(found[:, 2:] - found[:, :2], axis=1)
    return int(((inter / (area_r[:, None] + area_f[None, :] - inter)).max(axis=1) >= iou).sum())


@dataclass
class Plan:
    """What the detector looks at for one frame: the whole of it (``regions`` None), or these crops."""

    regions: list[Region] | None


class RegionDetector:
    """Whole frames through ``full``, motion regions through ``region`` (the same weights at a smaller input).

    ``detect`` takes one entry per frame of a batch: (camera id, BGR frame, its motion boxes or None) and
    returns one Detections per frame, in frame pixels. ``looks`` counts whole-frame and region looks.
    """

    def __init__(self, full: Backend, region: Backend | None, settings: RegionConfig, full_input: int, nms: float):
        self.full = full
        self.region = region
        self.settings = settings
        self.full_input = full_input
        self.nms = nms
        self.names = full.names
        self.looks = {"full": 0, "regions": 0, "crops": 0}
        self._last_full: dict[str, float] = {}

    def plan(self, camera_id: str, frame_shape: tuple[int, ...], motion: np.ndarray | None, now: float) -> Plan:
        """Whole frame or regions, for one camera's frame at ``now`` (seconds, any steady clock)."""
        s = self.settings
        last = self._last_full.get(camera_id)
        due = last is None or now - last >= s.full_every_s or now < last
        if self.region is None or s.mode == "full" or motion is None or len(motion) == 0 or due:
            self._last_full[camera_id] = now
            return Plan(None)
        height, width = frame_shape[:2]
        # A window of the frame's shape, squeezed into the region input as the whole frame is into the full
        # input: the network sees each object at the very scale and aspect of a full-frame look.
        window = (round(width * s.input_size / self.full_input), round(height * s.input_size / self.full_input))
        cell = (width * _CELL / self.full_input, height * _CELL / self.full_input)
        regions = build_regions(motion, frame_shape, window, s.margin, cell)
        if regions is None or len(regions) * s.input_size**2 >= self.full_input**2:
            self._last_full[camera_id] = now
            return Plan(None)
        return Plan(regions)

    def run(self, frames: list[np.ndarray], plans: list[Plan]) -> list[Detections]:
        """The detections of each frame following its plan: all whole frames in one call, all crops in another."""
        whole = [i for i, p in enumerate(plans) if p.regions is None]
        results: list[Detections] = [Detections.empty()] * len(frames)
        if whole:
            for i, seen in zip(whole, self.full.detect([frames[i] for i in whole]), strict=True):
                results[i] = seen
            self.looks["full"] += len(whole)
        crops = [(i, r) for i, p in enumerate(plans) if p.regions is not None for r in p.regions]
        if crops and self.region is not None:
            found = self.region.detect([frames[i][r[1] : r[3], r[0] : r[2]] for i, r in crops])
            for i in {i for i, _ in crops}:
                results[i] = merge_regions([(r, d) for (j, r), d in zip(crops, found, strict=True) if j == i], self.nms)
                self.looks["regions"] += 1
            self.looks["crops"] += len(crops)
        return results


def region_detector(full: Backend, cfg: BackendConfig, settings: RegionConfig) -> RegionDetector | None:
    """A RegionDetector around the loaded full-frame backend ``full``, or None where regions are off or cannot be.

    The region model is the same weights loaded a second time at the region input: OpenCV DNN reallocates a
    network whose input size changes, so each size keeps its own.
    """
    if settings.mode == "full":
        return None
    if cfg.kind == "onnx":
        log.warning("regions need a model that takes any input size; an ONNX export has a fixed one: full frames")
        return None
    from detectors.load import load_backend

    region = load_backend(cfg.model_copy(update={"input_size": settings.input_size}))
    return RegionDetector(full, region, settings, cfg.input_size, cfg.nms)
