"""Visual fire and smoke: a model's fire or smoke classes become fire Events.

Any backend can carry a fire/smoke model (a YOLO model a user trained or
obtained, through ultralytics or ONNX); this maps its class names to what they
mean. Smoke or flame must be seen for ``hold_s`` before a START, so one
false box is no alarm, and must be gone for ``clear_s`` before the END.

Example:
    >>> import numpy as np
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="cam-1")
    >>> watch = VisualFire(VisualFireConfig(hold_s=1.0), place, source="node-1")
    >>> smoke = Detections(xyxy=np.array([[10, 10, 60, 60]], np.float32),
    ...                    confidence=np.array([0.8], np.float32), class_name=np.array(["smoke"], object))
    >>> frame = np.zeros((100, 100, 3), np.uint8)
    >>> watch.process(frame, smoke, ts=0.0), [e.type for e in watch.process(frame, smoke, ts=1.5)]
    ([], ['visual_smoke'])
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.models import Event, EventKind, EventState, Place, Severity
from detectors.detections import Detections
from detectors.snapshot import Box, render

log = logging.getLogger(__name__)


SHOWS: dict[str, Literal["smoke", "flame"]] = {"smoke": "smoke", "fire": "flame", "flame": "flame"}
"""What the class names of common fire models show."""


class VisualFireConfig(ConfigModel):
    classes: dict[str, Literal["smoke", "flame"]] = Field(
        default_factory=SHOWS.copy,
        title="Classes",
        description="Model class name -> what it shows (smoke or flame).",
    )
    min_score: float = Field(default=0.4, ge=0, le=1, title="Minimum score", description="Weaker boxes are ignored.")
    hold_s: float = Field(
        default=2.0, ge=0, title="Hold", description="Seconds smoke or flame must be seen before the alarm."
    )
    clear_s: float = Field(default=30.0, gt=0, title="Clear", description="Seconds without it before the alarm ends.")


class VisualFire:
    """Per camera: turns fire/smoke detections into START/END fire Events, one per kind of sight."""

    def __init__(self, config: VisualFireConfig, place: Place, source: str) -> None:
        self.config, self.place, self.source = config, place, source
        self._first_seen: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}
        self._active: set[str] = set()

    def process(self, frame: np.ndarray, detections: Detections, ts: float) -> list[Event]:
        events = []
        for sight in sorted(set(self.config.classes.values())):
            names = [n for n, s in self.config.classes.items() if s == sight]
            seen = detections[np.isin(detections.class_name, names) & (detections.confidence >= self.config.min_score)]
            if len(seen):
                self._first_seen.setdefault(sight, ts)
                self._last_seen[sight] = ts
                held = ts - self._first_seen[sight] >= self.config.hold_s
                if held and sight not in self._active:
                    self._active.add(sight)
                    events.append(self._event(sight, EventState.START, ts, frame, seen))
            elif sight in self._last_seen and ts - self._last_seen[sight] >= self.config.clear_s:
                del self._first_seen[sight], self._last_seen[sight]
                if sight in self._active:
                    self._active.discard(sight)
                    events.append(self._event(sight, EventState.END, ts, frame, seen))
        return events

    def _event(self, sight: str, state: EventState, ts: float, frame: np.ndarray, seen: Detections) -> Event:
        boxes = [Box(tuple(box), f"{name} {score:.2f}") for box, name, score in zip(seen.xyxy.tolist(),
                 seen.class_name, seen.confidence, strict=True)]  # fmt: skip
        where = self.place.device or self.place.site
        return Event(
            ts=datetime.fromtimestamp(ts, UTC),
            kind=EventKind.FIRE,
            type=f"visual_{sight}",
            state=state,
            severity=Severity.MAJOR,
            place=self.place,
            source=self.source,
            title=f"Camera sees {sight} at {where}" + (", cleared" if state is EventState.END else ""),
            attributes={"sight": sight, "boxes": seen.xyxy.tolist(), "scores": seen.confidence.tolist()},
            snapshot=render(frame, boxes) if state is EventState.START else None,
        )
