"""Sensor rules: Readings in, Events out.

An alarm flag (smoke, gas, carbon monoxide) that sets raises a fire Event and
its clearing ends it; a battery-low or tamper flag does the same as trouble.
Only changes raise events, so a detector that repeats ``smoke: true`` every
minute is one alarm, not one per message.

Example:
    >>> from alerts.models import Place, Reading
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> rules = SensorRules(source="node-1")
    >>> [e.state.value for e in rules.apply([Reading(place=place, quantity="smoke", value=1.0)])]
    ['start']
    >>> rules.apply([Reading(place=place, quantity="smoke", value=1.0)])
    []
    >>> [e.state.value for e in rules.apply([Reading(place=place, quantity="smoke", value=0.0)])]
    ['end']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from alerts.models import Event, EventKind, EventState, Reading, Severity

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlagRule:
    """A 1/0 reading whose setting starts a condition and whose clearing ends it."""

    kind: EventKind
    type: str
    severity: Severity
    title: str


FLAG_RULES: dict[str, FlagRule] = {
    "smoke": FlagRule(EventKind.FIRE, "smoke", Severity.CRITICAL, "Smoke alarm"),
    "gas": FlagRule(EventKind.FIRE, "gas", Severity.CRITICAL, "Gas alarm"),
    "carbon_monoxide": FlagRule(EventKind.FIRE, "carbon_monoxide", Severity.CRITICAL, "Carbon monoxide alarm"),
    "battery_low": FlagRule(EventKind.TROUBLE, "battery_low", Severity.MINOR, "Sensor battery low"),
    "tamper": FlagRule(EventKind.TROUBLE, "sensor_tamper", Severity.MAJOR, "Sensor tampered with"),
}


class SensorRules:
    """Keeps each sensor's flags and turns their changes into Events."""

    def __init__(self, source: str, names: dict[str, str] | None = None) -> None:
        self.source = source
        self.names = names or {}
        self._flags: dict[tuple[str | None, str], bool] = {}

    def apply(self, readings: list[Reading]) -> list[Event]:
        """Events raised by one message's readings, which are attached to each event."""
        values = {r.quantity: r.value for r in readings}
        events = []
        for reading in readings:
            rule = FLAG_RULES.get(reading.quantity)
            if rule is None:
                continue
            key = (reading.place.device, reading.quantity)
            now_set = reading.value >= 0.5
            # An unknown earlier state counts as clear: a first "smoke: false" is no event.
            was_set = self._flags.get(key, False)
            self._flags[key] = now_set
            if now_set == was_set:
                continue
            events.append(self._event(rule, reading, values, EventState.START if now_set else EventState.END))
        return events

    def _event(self, rule: FlagRule, reading: Reading, values: dict[str, float], state: EventState) -> Event:
        device = reading.place.device or ""
        where = self.names.get(device) or device
        title = f"{rule.title} at {where}" if state is EventState.START else f"{rule.title} cleared at {where}"
        log.info("%s: %s", reading.place.site, title)
        return Event(
            ts=reading.ts,
            kind=rule.kind,
            type=rule.type,
            state=state,
            severity=rule.severity,
            place=reading.place,
            source=self.source,
            title=title,
            attributes={"readings": values, "trigger": reading.quantity},
        )
