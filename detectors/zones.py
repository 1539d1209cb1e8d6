"""Zones, directed lines and armed schedules of one camera.

Coordinates are fractions of the frame (0..1, x to the right, y down), so a
zone survives a change of the camera's resolution. An object's position is the
bottom-centre of its box (:meth:`Detections.anchors`): where a person stands
or a vehicle touches the ground, which is what a zone drawn on the ground means.

A schedule is a list of weekly windows in a local IANA time zone, such as
``Mon-Fri 22:00-06:00``: the days name when a window opens, and a window whose
end is not after its start runs past midnight into the next day.

Example:
    >>> import numpy as np
    >>> from datetime import datetime
    >>> from zoneinfo import ZoneInfo
    >>> d = Detections(xyxy=np.array([[10, 10, 30, 90], [150, 10, 170, 90]], dtype=np.float32),
    ...                confidence=np.ones(2, dtype=np.float32), class_name=np.array(["person"] * 2, dtype=object))
    >>> PolygonZone([(0, 0), (0.5, 0), (0.5, 1), (0, 1)]).trigger(d, (100, 200)).tolist()
    [True, False]
    >>> night = Schedule(ScheduleConfig(timezone="Asia/Shanghai", armed=["Mon-Fri 22:00-06:00"]))
    >>> def at(day, hour):  # November 2026: the 27th is a Friday
    ...     return datetime(2026, 11, day, hour, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    >>> [night.armed(at(27, 23)), night.armed(at(28, 5)), night.armed(at(28, 23))]
    [True, True, False]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import Field, field_validator, model_validator

from alerts.core.config import ConfigModel
from detectors.detections import Detections

log = logging.getLogger(__name__)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Zone, line and schedule names end up in event attributes and alert titles: no spaces or slashes."""

Fraction = Annotated[float, Field(ge=0, le=1)]
Point = tuple[Fraction, Fraction]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d\d:\d\d)\s*-\s*(?P<end>\d\d:\d\d)\s*$")


class ZoneConfig(ConfigModel):
    name: str = Field(pattern=NAME, title="Name", description="Name rules refer to, e.g. walkway.")
    polygon: list[Point] = Field(
        min_length=3,
        title="Polygon",
        description="Corners as [x, y] fractions of the frame (0..1, y down), in drawing order.",
    )


class LineConfig(ConfigModel):
    name: str = Field(pattern=NAME, title="Name", description="Name rules refer to, e.g. gate.")
    start: Point = Field(title="Start", description="One end, [x, y] fractions of the frame.")
    end: Point = Field(title="End", description="Other end, [x, y] fractions of the frame.")
    in_side: Literal["left", "right"] = Field(
        default="left",
        title="Inside",
        description="Which side of the arrow from start to end, as seen on the picture, is 'in'; crossing "
        "towards it counts in, away from it counts out.",
    )
    margin: Fraction = Field(
        default=0.01,
        title="Margin",
        description="Distance from the line, as a fraction of the frame, an object must reach on a side "
        "before it counts as being there, so someone standing on the line is not counted over and over.",
    )

    @model_validator(mode="after")
    def _has_length(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError("a line needs two different points")
        return self


class ScheduleConfig(ConfigModel):
    timezone: str | None = Field(
        default=None, title="Time zone", description="IANA zone of the windows, e.g. Asia/Shanghai; unset: the site's."
    )
    armed: list[str] = Field(
        min_length=1,
        title="Armed windows",
        description="Weekly windows, e.g. 'Mon-Fri 22:00-06:00', 'Sat,Sun 00:00-24:00', 'daily 23:00-05:00'; "
        "an end not after the start runs into the next day.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("armed")
    @classmethod
    def _parsable(cls, windows: list[str]) -> list[str]:
        for text in windows:
            Window.parse(text)
        return windows


@dataclass(frozen=True, slots=True)
class Window:
    """One weekly window: the weekdays it opens on (0 = Monday) and its minutes of the day."""

    days: frozenset[int]
    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"{text!r}: expected days and hours, e.g. 'Mon-Fri 22:00-06:00'")
        start, end = (_minutes(match[k], text) for k in ("start", "end"))
        if start == end or start == 24 * 60:
            raise ValueError(f"{text!r}: empty or ambiguous window; write 00:00-24:00 for a whole day")
        return cls(_days(match["days"], text), start, end)

    def contains(self, weekday: int, minute: float) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or ((weekday - 1) % 7 in self.days and minute < self.end)


def _minutes(hhmm: str, text: str) -> int:
    hours, minutes = int(hhmm[:2]), int(hhmm[3:])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{text!r}: {hhmm} is not a time of day")
    return hours * 60 + minutes


def _days(spec: str, text: str) -> frozenset[int]:
    if spec.strip().lower() == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.lower().replace(" ", "").split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in _DAYS for e in ends):
            raise ValueError(f"{text!r}: {part!r} is not a day or day range such as Mon-Fri (or 'daily')")
        first, last = _DAYS.index(ends[0]), _DAYS.index(ends[-1])
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))  # Fri-Mon wraps over the weekend
    return frozenset(days)


class Schedule:
    """Answers whether a schedule is armed at a moment; no schedule at all means always armed."""

    def __init__(self, config: ScheduleConfig | None, default_timezone: str = "UTC") -> None:
        self.windows = [Window.parse(w) for w in config.armed] if config else []
        self.always = config is None
        self.tz = ZoneInfo((config.timezone if config else None) or default_timezone)

    def armed(self, ts: float) -> bool:
        """Whether the schedule is armed at ``ts`` (seconds since the epoch), by local wall-clock time."""
        if self.always:
            return True
        local = datetime.fromtimestamp(ts, self.tz)
        minute = local.hour * 60 + local.minute + local.second / 60
        return any(w.contains(local.weekday(), minute) for w in self.windows)


def _normalised_anchors(detections: Detections, frame_shape: tuple[int, ...]) -> np.ndarray:
    height, width = frame_shape[:2]
    return detections.anchors() / np.array([width, height], dtype=np.float32)


class PolygonZone:
    """A polygon in frame fractions; ``trigger`` says which detections stand inside it."""

    def __init__(self, polygon: Sequence[Sequence[float]], name: str = "") -> None:
        self.polygon = np.asarray(polygon, dtype=np.float64)
        self.name = name

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: which (N, 2) points in frame fractions lie inside (even-odd rule)."""
        x, y = points[:, :1], points[:, 1:]
        x1, y1 = self.polygon[:, 0], self.polygon[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        straddles = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        return ((straddles & (x < cross_x)).sum(axis=1) % 2).astype(bool)

    def trigger(self, detections: Detections, frame_shape: tuple[int, ...]) -> np.ndarray:
        """(N,) bool: detections whose bottom-centre is inside, for a frame of ``frame_shape`` (height, width, ...)."""
        return self.contains(_normalised_anchors(detections, frame_shape))


class LineCounter:
    """A directed line that counts tracks crossing it, in and out separately.

    A crossing is a track whose position moves from one side (past the margin)
    to the other between two sightings, through the segment itself, not its
    extension. Untracked detections (id -1) never cross.
    """

    def __init__(self, config: LineConfig, forget_after: int = 1000) -> None:
        self.config = config
        self.start = np.asarray(config.start, dtype=np.float64)
        direction = np.asarray(config.end, dtype=np.float64) - self.start
        self._length2 = float(direction @ direction)
        self._direction = direction
        # Image y points down, so a positive cross product is the right-hand side of the arrow.
        self._in_sign = -1.0 if config.in_side == "left" else 1.0
        self.forget_after = forget_after
        self.in_count = 0
        self.out_count = 0
        self._last: dict[int, tuple[float, np.ndarray, int]] = {}
        self._calls = 0

    def trigger(self, detections: Detections, frame_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(crossed_in, crossed_out): (N,) bool masks of the detections that crossed since their last sighting."""
        self._calls += 1
        points = _normalised_anchors(detections, frame_shape).astype(np.float64)
        rel = points - self.start
        offset = self._in_sign * (self._direction[0] * rel[:, 1] - self._direction[1] * rel[:, 0])
        offset /= np.sqrt(self._length2)
        crossed_in = np.zeros(len(detections), dtype=bool)
        crossed_out = np.zeros(len(detections), dtype=bool)
        for i, (track, distance) in enumerate(zip(detections.tracker_id.tolist(), offset.tolist(), strict=True)):
            if track < 0 or abs(distance) < self.config.margin:
                continue
            before = self._last.get(track)
            self._last[track] = (distance, points[i], self._calls)
            if before is None or (before[0] > 0) == (distance > 0) or not self._through(before, distance, points[i]):
                continue
            if distance > 0:
                crossed_in[i] = True
                self.in_count += 1
            else:
                crossed_out[i] = True
                self.out_count += 1
        if self._calls % 100 == 0:
            self._last = {k: v for k, v in self._last.items() if self._calls - v[2] <= self.forget_after}
        return crossed_in, crossed_out

    def _through(self, before: tuple[float, np.ndarray, int], distance: float, point: np.ndarray) -> bool:
        # Where the path from the last sighting meets the line, as a position along the segment (0..1).
        previous_distance, previous_point, _ = before
        where = previous_point + (point - previous_point) * (previous_distance / (previous_distance - distance))
        along = float((where - self.start) @ self._direction) / self._length2
        return 0.0 <= along <= 1.0
