"""Rules: one camera's tracked Detections in, security Events out.

A :class:`SceneConfig` names a camera's zones, lines, armed schedules and
rules; a :class:`RuleEngine` runs them on every tracked frame. Rules go by the
frame's timestamp, never the clock, so footage can run faster than real time.

A condition is one situation with one life: one track in a zone (intrusion,
loitering, illegal parking) or one zone's state (occupied, crowd). It raises a
START once it has held long enough, an UPDATE every ``update_s`` while it goes
on, and an END once it has been gone for ``leave_s`` (a track that left the
zone or was lost, or a schedule that disarmed): an :class:`alerts.core.debounce.Debounce`
with updates on top. A line crossing is a moment: one START per crossing. Only
tracked detections count (id -1 is unconfirmed).

Example:
    >>> from alerts.core.models import Place
    >>> scene = SceneConfig.model_validate({
    ...     "zones": [{"name": "yard", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}],
    ...     "rules": [{"type": "intrusion", "zone": "yard"}]})
    >>> engine = RuleEngine(scene, Place(sub_district="n", community="c", grid="g", site="s", device="cam1"), "node-1")
    >>> person = Detections(xyxy=np.array([[10, 10, 30, 60]], dtype=np.float32), confidence=np.array([0.8]),
    ...                     class_name=np.array(["person"], dtype=object), tracker_id=np.array([7]))
    >>> frame = np.zeros((100, 100, 3), dtype=np.uint8)
    >>> [(e.type, e.state.value, e.attributes["track_id"]) for e in engine.process(frame, person, ts=0.0)]
    [('intrusion', 'start', 7)]
    >>> engine.process(frame, person, ts=1.0), [e.state.value for e in engine.process(frame, person[:0], ts=5.0)]
    ([], ['end'])
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

import numpy as np
from pydantic import Field, model_validator

from alerts.core.config import ConfigModel
from alerts.core.debounce import Debounce
from alerts.core.models import Event, EventKind, EventState, Place, Severity
from detectors.detections import Detections
from detectors.snapshot import Box, render
from detectors.zones import NAME, LineConfig, LineCounter, PolygonZone, Schedule, ScheduleConfig, ZoneConfig

log = logging.getLogger(__name__)

VEHICLES = ["car", "truck", "bus", "motorcycle"]


class _RuleConfig(ConfigModel):
    """The fields every rule has; each kind of rule adds its own."""

    type: str = Field(title="Type", description="What the rule watches for.")
    name: str | None = Field(
        default=None, pattern=NAME, title="Name", description="Rule name in events; unset: type and zone or line."
    )
    schedule: str | None = Field(
        default=None, title="Schedule", description="Name of the schedule that arms the rule; unset: always armed."
    )
    severity: Severity | None = Field(default=None, title="Severity", description="Unset: the type's default.")
    classes: list[str] | None = Field(
        default=["person"], title="Classes", description="Detector classes the rule watches; null: any class."
    )
    leave_s: float = Field(
        default=2.0, ge=0, title="Leave time", description="Seconds a condition must be gone before it ends."
    )
    update_s: float | None = Field(
        default=60.0, gt=0, title="Update interval", description="Seconds between updates while it lasts; null: none."
    )

    @property
    def target(self) -> str:
        """The zone or line the rule watches."""
        return str(getattr(self, "zone", None) or getattr(self, "line", ""))

    @property
    def label(self) -> str:
        return self.name or f"{self.type}:{self.target}"


class IntrusionRuleConfig(_RuleConfig):
    type: Literal["intrusion"] = Field(title="Type", description="An object enters the zone while armed.")
    zone: str = Field(title="Zone", description="Zone watched.")


class LoiteringRuleConfig(_RuleConfig):
    type: Literal["loitering"] = Field(title="Type", description="An object stays in the zone past a dwell time.")
    zone: str = Field(title="Zone", description="Zone watched.")
    dwell_s: float = Field(default=60.0, ge=0, title="Dwell time", description="Seconds in the zone before it fires.")


class LineCrossingRuleConfig(_RuleConfig):
    type: Literal["line_crossing"] = Field(title="Type", description="An object crosses the line.")
    line: str = Field(title="Line", description="Line watched.")
    direction: Literal["in", "out", "both"] = Field(
        default="both",
        title="Direction",
        description="Crossings that raise events: towards the line's inside, away from it, or both.",
    )


class IllegalParkingRuleConfig(_RuleConfig):
    type: Literal["illegal_parking"] = Field(title="Type", description="A vehicle stands still in the zone.")
    zone: str = Field(title="Zone", description="No-parking zone.")
    classes: list[str] | None = Field(default=VEHICLES, title="Classes", description="Vehicle classes watched.")
    stationary_s: float = Field(default=300.0, ge=0, title="Stationary time", description="Seconds standing still.")
    max_move: float = Field(
        default=0.25,
        gt=0,
        title="Maximum movement",
        description="How far the vehicle's ground point may wander, in its own box heights, and still stand still.",
    )
    leave_s: float = Field(default=10.0, ge=0, title="Leave time", description="Seconds gone before it ends.")
    update_s: float | None = Field(default=300.0, gt=0, title="Update interval", description="Null: no updates.")


class ZoneOccupiedRuleConfig(_RuleConfig):
    type: Literal["zone_occupied"] = Field(title="Type", description="Objects occupy the zone past a time.")
    zone: str = Field(title="Zone", description="Zone that must stay clear, e.g. a fire lane.")
    classes: list[str] | None = Field(default=None, title="Classes", description="Classes that occupy; null: any.")
    occupied_s: float = Field(default=600.0, ge=0, title="Occupied time", description="Seconds occupied.")
    leave_s: float = Field(default=10.0, ge=0, title="Leave time", description="Seconds clear before it ends.")
    update_s: float | None = Field(default=300.0, gt=0, title="Update interval", description="Null: no updates.")


class CrowdRuleConfig(_RuleConfig):
    type: Literal["crowd"] = Field(title="Type", description="Many objects in the zone at once.")
    zone: str = Field(title="Zone", description="Zone watched.")
    min_count: int = Field(default=5, ge=2, title="Minimum count", description="Objects at once that make a crowd.")
    hold_s: float = Field(default=3.0, ge=0, title="Hold time", description="Seconds the crowd lasts before it fires.")
    leave_s: float = Field(default=5.0, ge=0, title="Leave time", description="Seconds under the count before it ends.")


RuleConfig = Annotated[
    IntrusionRuleConfig
    | LoiteringRuleConfig
    | LineCrossingRuleConfig
    | IllegalParkingRuleConfig
    | ZoneOccupiedRuleConfig
    | CrowdRuleConfig,
    Field(discriminator="type"),
]
SEVERITY = {"intrusion": Severity.MAJOR, "crowd": Severity.MAJOR, "line_crossing": Severity.INFO}
ENFORCEMENT_RULES = frozenset({"illegal_parking", "zone_occupied"})
"""Rules whose events are for the enforcement desks (city management, traffic police), not the police."""


class SceneConfig(ConfigModel):
    """What one camera watches: its zones, lines, schedules and rules."""

    zones: list[ZoneConfig] = Field(default_factory=list, title="Zones", description="Polygons on the picture.")
    lines: list[LineConfig] = Field(default_factory=list, title="Lines", description="Directed counting lines.")
    schedules: dict[str, ScheduleConfig] = Field(
        default_factory=dict, title="Schedules", description="Armed schedules by name, for rules to refer to."
    )
    rules: list[RuleConfig] = Field(default_factory=list, title="Rules", description="What raises events.")

    @model_validator(mode="after")
    def _references(self) -> SceneConfig:
        for what, listed in (("zone", [z.name for z in self.zones]), ("line", [x.name for x in self.lines])):
            if len(set(listed)) < len(listed):
                raise ValueError(f"{what} names must be unique: {listed}")
        known = {"zone": {z.name for z in self.zones}, "line": {x.name for x in self.lines}, "schedule": self.schedules}
        for rule in self.rules:
            for what, names in known.items():
                ref = getattr(rule, what, None)
                if ref is not None and ref not in names:
                    raise ValueError(f"rule {rule.label}: no {what} named {ref!r}; known: {sorted(names)}")
        labels = [r.label for r in self.rules]
        if len(set(labels)) < len(labels):
            raise ValueError(f"rules need distinct names (set name: on rules of one type and zone): {labels}")
        return self


@dataclass(frozen=True, slots=True)
class Sighting:
    """One detection, as an event tells it."""

    track: int
    cls: str
    score: float
    xyxy: tuple[float, float, float, float]
    size: tuple[int, int]
    """Frame width and height in pixels."""

    def attributes(self) -> dict[str, Any]:
        w, h = self.size
        norm = [self.xyxy[0] / w, self.xyxy[1] / h, self.xyxy[2] / w, self.xyxy[3] / h]
        return {
            "track_id": self.track,
            "class": self.cls,
            "score": round(self.score, 3),
            "box": [round(v) for v in self.xyxy],
            "box_norm": [round(v, 4) for v in norm],
        }


@dataclass
class _Condition:
    switch: Debounce
    seen: list[Sighting]
    last_emit: float = 0.0


@dataclass(slots=True)
class _Emit:
    state: EventState
    seen: list[Sighting]
    attributes: dict[str, Any] = field(default_factory=dict)


class _Conditions:
    """Conditions by key, each a :class:`Debounce`: START after ``hold_s`` present, UPDATE every ``update_s``,
    END ``leave_s`` after gone."""

    def __init__(self, hold_s: float, leave_s: float, update_s: float | None) -> None:
        self.hold_s, self.leave_s, self.update_s = hold_s, leave_s, update_s
        self.conditions: dict[Hashable, _Condition] = {}

    def step(self, ts: float, present: dict[Hashable, list[Sighting]]) -> list[_Emit]:
        emits = []
        for key, seen in present.items():
            c = self.conditions.setdefault(key, _Condition(Debounce(self.hold_s, self.leave_s), seen))
            c.seen = seen
            if c.switch.update(True, ts):
                emits.append(_Emit(EventState.START, seen, self._age(c, ts)))
                c.last_emit = ts
            elif c.switch.on and self.update_s is not None and ts - c.last_emit >= self.update_s:
                emits.append(_Emit(EventState.UPDATE, seen, self._age(c, ts)))
                c.last_emit = ts
        for key, c in list(self.conditions.items()):
            if key not in present:
                ended = c.switch.update(None, ts) is False
                if not c.switch.held:
                    del self.conditions[key]
                if ended:
                    emits.append(_Emit(EventState.END, c.seen, self._age(c, c.switch.last_seen)))
        return emits

    @staticmethod
    def _age(c: _Condition, ts: float) -> dict[str, Any]:
        return {"duration_s": round(ts - c.switch.since, 1)}


class _Frame:
    """One frame as the rules see it; zone and class masks are worked out once and shared by the rules."""

    def __init__(
        self,
        detections: Detections,
        shape: tuple[int, ...],
        ts: float,
        zones: dict[str, PolygonZone],
        crossings: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.detections, self.shape, self.ts, self.crossings = detections, shape, ts, crossings
        self.size = (int(shape[1]), int(shape[0]))
        self._zones = zones
        self._masks: dict[Hashable, np.ndarray] = {}

    def of(self, classes: list[str] | None) -> np.ndarray:
        """Tracked detections of these classes (any class when None)."""
        key = tuple(classes) if classes is not None else None
        if key not in self._masks:
            mask = self.detections.tracker_id >= 0
            self._masks[key] = mask if classes is None else mask & np.isin(self.detections.class_name, classes)
        return self._masks[key]

    def rows(self, zone: str, classes: list[str] | None) -> np.ndarray:
        """Indices of the tracked detections of these classes standing in the zone."""
        if zone not in self._masks:
            self._masks[zone] = self._zones[zone].trigger(self.detections, self.shape)
        return np.flatnonzero(self._masks[zone] & self.of(classes))

    def sighting(self, row: int) -> Sighting:
        d = self.detections
        x1, y1, x2, y2 = (float(v) for v in d.xyxy[row])
        track, cls, score = int(d.tracker_id[row]), str(d.class_name[row]), float(d.confidence[row])
        return Sighting(track, cls, score, (x1, y1, x2, y2), self.size)


class _TrackRule:
    """Intrusion, loitering (and, below, parking): one condition per track in the zone."""

    def __init__(
        self, config: IntrusionRuleConfig | LoiteringRuleConfig | IllegalParkingRuleConfig, hold_s: float
    ) -> None:
        self.config = config
        self.debounce = _Conditions(hold_s, config.leave_s, config.update_s)

    def step(self, frame: _Frame, armed: bool) -> list[_Emit]:
        return self.debounce.step(frame.ts, self._present(frame) if armed else {})

    def _present(self, frame: _Frame) -> dict[Hashable, list[Sighting]]:
        seen = map(frame.sighting, frame.rows(self.config.zone, self.config.classes))
        return {s.track: [s] for s in seen}


class _ParkingRule(_TrackRule):
    """A vehicle standing still: once it moves, its next stillness is a new condition."""

    config: IllegalParkingRuleConfig

    def __init__(self, config: IllegalParkingRuleConfig) -> None:
        super().__init__(config, config.stationary_s)
        self._still: dict[int, tuple[float, float, int]] = {}
        """Per track: the ground point where it stopped, and how many times it has stopped."""

    def _present(self, frame: _Frame) -> dict[Hashable, list[Sighting]]:
        present: dict[Hashable, list[Sighting]] = {}
        for s in super()._present(frame).values():
            x1, y1, x2, y2 = s[0].xyxy
            x, y = (x1 + x2) / 2, y2
            ref = self._still.get(s[0].track)
            if ref is None or np.hypot(x - ref[0], y - ref[1]) > self.config.max_move * (y2 - y1):
                ref = self._still[s[0].track] = (x, y, ref[2] + 1 if ref else 0)
            present[(s[0].track, ref[2])] = s
        keys = cast("list[tuple[int, int]]", [*self.debounce.conditions, *present])  # (track, stop number)
        live = {track for track, _ in keys}
        self._still = {track: ref for track, ref in self._still.items() if track in live}
        return present


class _ZoneRule:
    """Zone occupied and crowd: one condition per zone, present while it holds ``min_count`` objects."""

    def __init__(self, config: ZoneOccupiedRuleConfig | CrowdRuleConfig, hold_s: float, min_count: int) -> None:
        self.config, self.min_count = config, min_count
        self.debounce = _Conditions(hold_s, config.leave_s, config.update_s)

    def step(self, frame: _Frame, armed: bool) -> list[_Emit]:
        seen = [frame.sighting(r) for r in frame.rows(self.config.zone, self.config.classes)] if armed else []
        return self.debounce.step(frame.ts, {self.config.zone: seen} if len(seen) >= self.min_count else {})


class _LineRule:
    """Line crossing: every crossing counts by direction; those in the watched direction raise an INSTANT event."""

    def __init__(self, config: LineCrossingRuleConfig) -> None:
        self.config = config
        self.counts = {"in": 0, "out": 0}

    def step(self, frame: _Frame, armed: bool) -> list[_Emit]:
        emits = []
        for direction, mask in zip(("in", "out"), frame.crossings[self.config.line], strict=True):
            for row in np.flatnonzero(mask & frame.of(self.config.classes)) if armed else []:
                self.counts[direction] += 1
                if self.config.direction in (direction, "both"):
                    counts = {"count_in": self.counts["in"], "count_out": self.counts["out"]}
                    emits.append(
                        _Emit(EventState.INSTANT, [frame.sighting(int(row))], {"direction": direction, **counts})
                    )
        return emits


def _build(config: RuleConfig) -> _TrackRule | _ZoneRule | _LineRule:
    match config:
        case IntrusionRuleConfig():
            return _TrackRule(config, 0.0)
        case LoiteringRuleConfig():
            return _TrackRule(config, config.dwell_s)
        case IllegalParkingRuleConfig():
            return _ParkingRule(config)
        case ZoneOccupiedRuleConfig():
            return _ZoneRule(config, config.occupied_s, 1)
        case CrowdRuleConfig():
            return _ZoneRule(config, config.hold_s, config.min_count)
        case LineCrossingRuleConfig():
            return _LineRule(config)


class RuleEngine:
    """One camera's rules, fed its tracked frames in time order; returns the Events each frame raises."""

    def __init__(
        self, scene: SceneConfig, place: Place, source: str, timezone: str = "UTC", jpeg_quality: int = 85
    ) -> None:
        self.place, self.source, self.jpeg_quality = place, source, jpeg_quality
        self.zones = {z.name: PolygonZone(z.polygon, z.name) for z in scene.zones}
        self.lines = {x.name: LineCounter(x) for x in scene.lines}
        self._schedules = {name: Schedule(cfg, timezone) for name, cfg in scene.schedules.items()}
        self._always = Schedule(None)
        self.rules = [_build(r) for r in scene.rules]

    def process(self, frame: np.ndarray, detections: Detections, ts: float) -> list[Event]:
        """Events raised by ``detections`` (tracked) of ``frame`` (BGR), taken at ``ts`` (seconds since the epoch)."""
        crossings = {name: line.trigger(detections, frame.shape) for name, line in self.lines.items()}
        view = _Frame(detections, frame.shape, ts, self.zones, crossings)
        events: list[Event] = []
        for rule in self.rules:
            armed = self._schedules.get(rule.config.schedule or "", self._always).armed(ts)
            events.extend(self._event(rule.config, emit, frame, ts) for emit in rule.step(view, armed))
        return events

    def _event(self, config: RuleConfig, emit: _Emit, frame: np.ndarray, ts: float) -> Event:
        where, on_line = config.target, isinstance(config, LineCrossingRuleConfig)
        attributes: dict[str, Any] = {"rule": config.label, "line" if on_line else "zone": where}
        # One alert per rule; under it, each track is a condition of its own, so one person leaving does not
        # clear an intrusion while another is still inside. Zone-wide rules have one condition: the zone.
        condition = ""
        if isinstance(config, ZoneOccupiedRuleConfig | CrowdRuleConfig):
            attributes |= {"count": len(emit.seen), "objects": [s.attributes() for s in emit.seen]}
        else:
            attributes |= emit.seen[0].attributes()
            condition = str(emit.seen[0].track)
        attributes |= emit.attributes
        snapshot = None
        if emit.state is not EventState.END:
            boxes = [Box(s.xyxy, f"{s.cls} {s.score:.2f} #{s.track}") for s in emit.seen]
            line = self.lines[where].config if on_line else None
            snapshot = render(
                frame,
                boxes,
                polygon=None if on_line else self.zones[where].polygon,
                line=(line.start, line.end) if line else None,
                quality=self.jpeg_quality,
            )
        return Event(
            ts=datetime.fromtimestamp(ts, UTC),
            kind=EventKind.ENFORCEMENT if config.type in ENFORCEMENT_RULES else EventKind.SECURITY,
            type=config.type,
            state=emit.state,
            severity=config.severity or SEVERITY.get(config.type, Severity.MINOR),
            place=self.place,
            source=self.source,
            subject=config.label,
            condition=condition,
            title=_title(config.type, where, attributes, emit.state),
            attributes=attributes,
            snapshot=snapshot,
        )


def _title(kind: str, where: str, a: dict[str, Any], state: EventState) -> str:
    minutes = f"{a.get('duration_s', 0) / 60:.0f} min"
    text = {
        "intrusion": f"Intrusion: {a.get('class')} in {where}",
        "loitering": f"Loitering: {a.get('class')} in {where} for {a.get('duration_s', 0):.0f} s",
        "line_crossing": f"Line crossing: {a.get('class')} crossed {where} ({a.get('direction')})",
        "illegal_parking": f"Illegal parking: {a.get('class')} in {where} for {minutes}",
        "zone_occupied": f"Zone occupied: {where} for {minutes}",
        "crowd": f"Crowd: {a.get('count')} in {where}",
    }[kind]
    return f"{text}, ended" if state is EventState.END else text
