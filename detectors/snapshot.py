"""Event snapshots: the frame as a JPEG with the boxes, zone and line that explain the event drawn on it.

Drawn only when an event is emitted, never per frame: a copy of the frame and
a JPEG encode cost a few milliseconds, which the hot loop cannot pay every frame.

Example:
    >>> import numpy as np
    >>> frame = np.zeros((120, 160, 3), dtype=np.uint8)
    >>> jpeg = render(frame, [Box((10, 20, 50, 100), "person 0.91 #3")], polygon=[(0, 0), (0.5, 0), (0.5, 1)])
    >>> jpeg[:2] == b"\\xff\\xd8" and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape
    (120, 160, 3)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

BOX_COLOUR = (0, 0, 255)
"""Red (BGR): the object the event is about."""
ZONE_COLOUR = (0, 255, 255)
"""Yellow (BGR): the zone or line the rule watches."""

Points = Sequence[Sequence[float]] | np.ndarray
"""(x, y) pairs in frame fractions."""


@dataclass(frozen=True, slots=True)
class Box:
    xyxy: tuple[float, float, float, float]
    """Pixels of the frame."""
    label: str


def render(
    frame: np.ndarray,
    boxes: Sequence[Box],
    polygon: Points | None = None,
    line: Points | None = None,
    quality: int = 85,
) -> bytes:
    """JPEG of ``frame`` (BGR) with ``boxes`` in pixels and a ``polygon`` or ``line`` in frame fractions."""
    return encode(draw(frame, boxes, polygon, line), quality)


def mosaic(tiles: Sequence[tuple[np.ndarray, str]], height: int = 360, quality: int = 85) -> bytes:
    """JPEG of several frames side by side at one height, each framed and labelled: many cameras, one look."""
    scaled = []
    for image, label in tiles:
        width = round(image.shape[1] * height / image.shape[0])
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        scaled.append(draw(small, [Box((0, 0, width - 1, height - 1), label)]))
    return encode(np.hstack(scaled), quality)


def draw(
    frame: np.ndarray,
    boxes: Sequence[Box],
    polygon: Points | None = None,
    line: Points | None = None,
) -> np.ndarray:
    """A copy of ``frame`` with ``boxes`` in pixels and a ``polygon`` or ``line`` in frame fractions drawn on."""
    image = frame.copy()
    height, width = image.shape[:2]
    thick = max(1, round(max(height, width) / 400))
    scale = np.array([width, height], dtype=np.float64)
    for shape, closed in ((polygon, True), (line, False)):
        if shape is not None:
            points = np.round(np.asarray(shape, dtype=np.float64) * scale).astype(np.int32)
            cv2.polylines(image, [points], closed, ZONE_COLOUR, thick, cv2.LINE_AA)
    font_scale = 0.4 * thick
    for box in boxes:
        x1, y1, x2, y2 = (round(v) for v in box.xyxy)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOUR, thick)
        (tw, th), base = cv2.getTextSize(box.label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = max(y1 - th - base, 0)  # above the box, or inside it at the top edge of the frame
        cv2.rectangle(image, (x1, top), (x1 + tw, top + th + base), BOX_COLOUR, cv2.FILLED)
        cv2.putText(image, box.label, (x1, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1)
    return image


def encode(image: np.ndarray, quality: int = 85) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return encoded.tobytes()
