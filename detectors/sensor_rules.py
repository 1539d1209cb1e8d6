"""Sensor rules: Readings and device liveness in, Events out.

Each rule is a condition of one sensor that starts (a START event) and ends
(an END event); only changes raise events, so a detector that repeats
``smoke: true`` every minute is one alarm, not one per message.

- fire: the alarm flags ``smoke``, ``gas`` and ``carbon_monoxide``; heat over a
  fixed temperature and a fast rate of rise (``detectors.heat``);
- test: a detector in test mode or with its test button pressed (``test``) is
  recorded as a fire Event of severity info marked ``test``, which the
  alert policy never dispatches. While it lasts, the detector's alarms are held
  back; one still on when the test ends starts then;
- trouble: battery low (the sensor's flag, or its battery under a percentage),
  tamper, offline on its availability topic, and silent past its heartbeat.

Times are the readings' own for the rules and the caller's ``now`` for
liveness, so tests need no clock and no sleeping. Each condition is an edge
detector, ``Debounce(0, 0)``: on and off at once. Every event carries the
message's readings (``Event.readings``); the rule that fired and the heat
rule's figures go in its attributes.

A restarted node gets back what was on with ``restore`` (from ``export``):
the sensor's next message then ends a condition that cleared meanwhile (an
END event), and one still on is reported once as an UPDATE, so its alert is
updated rather than raised again.

Example:
    >>> from alerts.core.models import Place, Reading
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> rules = SensorRules(source="node-1")
    >>> [e.state.value for e in rules.apply([Reading(place=place, quantity="smoke", value=1.0)])]
    ['start']
    >>> rules.apply([Reading(place=place, quantity="smoke", value=1.0)])
    []
    >>> [e.state.value for e in rules.apply([Reading(place=place, quantity="smoke", value=0.0)])]
    ['end']
    >>> restarted = SensorRules(source="node-1")
    >>> restarted.watch(place)
    >>> restarted.restore({"smoke-1": {"on": ["smoke"], "values": {"smoke": 1.0}}})
    >>> [e.state.value for e in restarted.apply([Reading(place=place, quantity="smoke", value=1.0)])]
    ['update']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.debounce import Debounce
from alerts.core.models import Event, EventKind, EventState, Place, Reading, Severity
from detectors.heat import HeatConfig, HeatRule

log = logging.getLogger(__name__)


class SensorRuleConfig(ConfigModel):
    """The rules' settings for one sensor; each sensor of a node config carries them."""

    heartbeat_s: float | None = Field(
        default=3600.0,
        gt=0,
        title="Heartbeat",
        description="Trouble when the sensor sends nothing for this many seconds; null never checks.",
    )
    battery_low_pct: float = Field(
        default=20.0,
        ge=0,
        le=100,
        title="Low battery",
        description="Trouble when the battery is under this percentage, as well as on the sensor's own flag.",
    )
    heat: HeatConfig | None = Field(
        default_factory=HeatConfig,
        title="Heat rules",
        description="Fixed-temperature and rate-of-rise alarms on the sensor's temperature; null turns them off.",
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """What a condition raises, and how a person reads its start and its end."""

    kind: EventKind
    type: str
    severity: Severity
    title: str
    ended: str


RULES: dict[str, Rule] = {
    "smoke": Rule(EventKind.FIRE, "smoke", Severity.CRITICAL, "Smoke alarm", "Smoke alarm cleared"),
    "gas": Rule(EventKind.FIRE, "gas", Severity.CRITICAL, "Gas alarm", "Gas alarm cleared"),
    "carbon_monoxide": Rule(
        EventKind.FIRE, "carbon_monoxide", Severity.CRITICAL, "Carbon monoxide alarm", "Carbon monoxide alarm cleared"
    ),
    "heat": Rule(EventKind.FIRE, "heat", Severity.CRITICAL, "Heat alarm", "Heat alarm cleared"),
    "rate_of_rise": Rule(EventKind.FIRE, "rate_of_rise", Severity.CRITICAL, "Temperature rising fast", "Rise stopped"),
    "test": Rule(EventKind.FIRE, "test", Severity.INFO, "Detector test", "Detector test over"),
    "battery_low": Rule(EventKind.TROUBLE, "battery_low", Severity.MINOR, "Sensor battery low", "Sensor battery ok"),
    "tamper": Rule(EventKind.TROUBLE, "sensor_tamper", Severity.MAJOR, "Sensor tampered with", "Tamper cleared"),
    "offline": Rule(EventKind.TROUBLE, "sensor_offline", Severity.MAJOR, "Sensor offline", "Sensor back online"),
    "silent": Rule(EventKind.TROUBLE, "sensor_silent", Severity.MAJOR, "Sensor silent", "Sensor reporting again"),
}
"""Conditions by name."""

FLAGS = ("test", "smoke", "gas", "carbon_monoxide", "tamper")
"""Conditions that are a 1/0 reading of the same name."""


@dataclass
class SensorState:
    """What the rules know of one sensor."""

    place: Place
    settings: SensorRuleConfig
    name: str
    since: datetime | None
    heat: HeatRule | None
    last_seen: datetime | None = None
    switches: dict[str, Debounce] = field(default_factory=dict)
    """Each condition met so far, by name."""
    values: dict[str, float] = field(default_factory=dict)
    resumed: set[str] = field(default_factory=set)
    """Conditions on before a restart that no reading has confirmed or ended since."""

    def is_on(self, name: str) -> bool:
        switch = self.switches.get(name)
        return switch is not None and switch.on

    @property
    def on(self) -> set[str]:
        """The conditions on now."""
        return {name for name, switch in self.switches.items() if switch.on}

    @property
    def online(self) -> bool:
        return not (self.is_on("offline") or self.is_on("silent"))


class SensorRules:
    """Keeps each sensor's conditions and turns their changes into Events."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._sensors: dict[str, SensorState] = {}

    def watch(
        self, place: Place, settings: SensorRuleConfig | None = None, name: str = "", since: datetime | None = None
    ) -> None:
        """Registers a configured sensor; from ``since`` on, it has ``settings.heartbeat_s`` to be heard."""
        settings = settings or SensorRuleConfig()
        heat = HeatRule(settings.heat) if settings.heat is not None else None
        self._sensors[place.device or ""] = SensorState(place, settings, name, since, heat)

    def state(self, device: str) -> SensorState | None:
        return self._sensors.get(device)

    def apply(self, readings: list[Reading]) -> list[Event]:
        """Events raised by one message's readings, which each event carries."""
        if not readings:
            return []
        first = readings[0]
        sensor = self._sensors.get(first.place.device or "")
        if sensor is None:
            self.watch(first.place)
            sensor = self._sensors[first.place.device or ""]
        values = {r.quantity: r.value for r in readings}
        sensor.values.update(values)
        conditions = {name: values[name] >= 0.5 for name in FLAGS if name in values}
        if "battery_low" in values or "battery" in values:
            conditions["battery_low"] = (
                sensor.values.get("battery_low", 0.0) >= 0.5
                or sensor.values.get("battery", 100.0) < sensor.settings.battery_low_pct
            )
        details: dict[str, float] = {}
        if sensor.heat is not None and sensor.heat.settings.quantity in values:
            heat, details = sensor.heat.update(first.ts, values[sensor.heat.settings.quantity])
            conditions.update(heat)
        testing = conditions.get("test", sensor.is_on("test"))
        events = []
        for name, on in conditions.items():
            if on and testing and name != "test" and RULES[name].kind is EventKind.FIRE:
                continue
            resumed = on and name in sensor.resumed
            sensor.resumed.discard(name)
            turned = self._switch(sensor, name, on, first.ts)
            if not resumed and turned is None:
                continue  # most messages: nothing to tell
            attributes: dict[str, Any] = {"trigger": name, **details}
            if resumed:
                events += self._events(sensor, name, EventState.UPDATE, first.ts, attributes, values)
            events += self._events(sensor, name, turned, first.ts, attributes, values)
        return events

    def export(self, device: str) -> dict[str, Any] | None:
        """What a restart needs of one sensor, as JSON-ready data: its conditions and last values."""
        sensor = self._sensors.get(device)
        if sensor is None:
            return None
        # A copy: the sink writes it later, on its own thread, while the next messages move the sensor on.
        return {"on": sorted(sensor.on), "values": dict(sensor.values)}

    def restore(self, states: dict[str, dict[str, Any]]) -> None:
        """Takes back what ``export`` gave, for the sensors watched (or met) by now."""
        for device, data in states.items():
            sensor = self._sensors.get(device)
            if sensor is None:
                continue
            sensor.switches = {name: Debounce(0, 0) for name in data["on"]}
            for switch in sensor.switches.values():
                switch.update(True, 0.0)  # on, as it was; an edge detector reads no time of its past
            sensor.resumed = set(data["on"])
            sensor.values.update(data["values"])
            if sensor.heat is not None:
                sensor.heat.hot = sensor.is_on("heat")

    def seen(self, device: str, now: datetime) -> list[Event]:
        """The sensor was heard from at ``now``: it is not silent (any more)."""
        sensor = self._sensors.get(device)
        if sensor is None:
            return []
        previous, sensor.last_seen = sensor.last_seen, now
        if not sensor.is_on("silent"):
            return []
        since = previous or sensor.since
        attributes = {"silent_since": since and since.isoformat()}
        return self._events(sensor, "silent", self._switch(sensor, "silent", False, now), now, attributes)

    def availability(self, device: str, online: bool, now: datetime) -> list[Event]:
        """The sensor (or its bridge, or the broker on its behalf) says it is online or offline."""
        sensor = self._sensors.get(device)
        if sensor is None:
            return []
        events = self.seen(device, now) if online else []
        turned = self._switch(sensor, "offline", not online, now)
        return events + self._events(sensor, "offline", turned, now, {"online": online})

    def check_silence(self, now: datetime) -> list[Event]:
        """Trouble for every sensor heard from neither since its heartbeat nor since it was watched."""
        events = []
        for sensor in self._sensors.values():
            heard = sensor.last_seen or sensor.since
            limit = sensor.settings.heartbeat_s
            if heard is None or limit is None or (now - heard).total_seconds() <= limit:
                continue
            attributes = {"last_seen": sensor.last_seen and sensor.last_seen.isoformat(), "heartbeat_s": limit}
            events += self._events(sensor, "silent", self._switch(sensor, "silent", True, now), now, attributes)
        return events

    @staticmethod
    def _switch(sensor: SensorState, name: str, on: bool, ts: datetime) -> EventState | None:
        """START or END when the condition turns on or off; None when it stays as it was."""
        # A new switch is off: a first "smoke: false" is no event.
        turned = sensor.switches.setdefault(name, Debounce(0, 0)).update(on, ts.timestamp())
        return None if turned is None else EventState.START if turned else EventState.END

    def _events(
        self,
        sensor: SensorState,
        name: str,
        state: EventState | None,
        ts: datetime,
        attributes: dict[str, Any],
        readings: dict[str, float] | None = None,
    ) -> list[Event]:
        """The condition's event in ``state``; none when there is no state to tell."""
        if state is None:
            return []
        rule = RULES[name]
        where = sensor.name or sensor.place.device
        title = f"{rule.ended if state is EventState.END else rule.title} at {where}"
        log.info("%s: %s", sensor.place.site, title)
        event = Event(
            ts=ts,
            kind=rule.kind,
            type=rule.type,
            state=state,
            severity=rule.severity,
            place=sensor.place,
            source=self.source,
            title=title,
            test=name == "test",
            readings=readings or {},
            attributes=attributes,
        )
        return [event]
