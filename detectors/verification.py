"""Alarm verification: two detectors of one site in alarm for one hazard within a window confirm each other.

Every fire alarm event leaves here marked ``confirmed`` (true or false) with
``confirmed_by`` (the devices in alarm together, sorted). An unconfirmed alarm
is passed on at once; when a second detector's alarm starts within the window
of one still on, both are confirmed, and the earlier one gets an UPDATE event
so that its alert is sent again, confirmed. A test is never an alarm here.
Two alarms of one device (smoke and heat) are one detector, not two.

Only detectors of the same hazard confirm each other (``HAZARDS``): smoke with
smoke, heat, a fast rise or a camera's smoke or flame; carbon monoxide with
carbon monoxide; gas with gas. A gas leak next door says nothing about a fire.

The alarms that are on are the state a restarted node needs: ``export(key)``
gives one as JSON-ready data (None once it is off) and ``restore`` takes them back.

Example:
    >>> from datetime import timedelta
    >>> from alerts.core.models import Event, EventKind, Place
    >>> site = Place(sub_district="n", community="c", grid="g", site="s")
    >>> verification = AlarmVerification(window_s=120)
    >>> first = Event(kind=EventKind.FIRE, type="smoke", place=site.with_device("a"), source="n1")
    >>> [(e.confirmed, e.confirmed_by) for e in verification.apply(first)]
    [(False, [])]
    >>> second = first.model_copy(update={"place": site.with_device("b"), "ts": first.ts + timedelta(seconds=30)})
    >>> [(e.place.device, e.state.value, e.confirmed_by) for e in verification.apply(second)]
    [('b', 'start', ['a', 'b']), ('a', 'update', ['a', 'b'])]
    >>> gas = first.model_copy(update={"place": site.with_device("c"), "type": "gas"})
    >>> [e.confirmed for e in verification.apply(gas)]
    [False]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.ids import time_id
from alerts.core.models import Event, EventKind, EventState

log = logging.getLogger(__name__)


class VerificationConfig(ConfigModel):
    """How fire alarms of one site confirm each other."""

    window_s: float = Field(
        default=120.0,
        gt=0,
        title="Confirmation window",
        description="A second detector whose alarm starts within this many seconds of another one still in alarm "
        "confirms both.",
    )


HAZARDS: dict[str, str] = {
    "smoke": "fire",
    "heat": "fire",
    "rate_of_rise": "fire",
    "visual_smoke": "fire",
    "visual_flame": "fire",
    "carbon_monoxide": "carbon_monoxide",
    "gas": "gas",
}
"""The hazard each fire event type stands for; a type not named here is a hazard of its own."""


def hazard(event_type: str) -> str:
    return HAZARDS.get(event_type, event_type)


@dataclass
class _Alarm:
    start: Event
    confirmed_by: frozenset[str]
    """Empty while unconfirmed; else every device in alarm together, this one included."""


def _marked(event: Event, confirmed_by: frozenset[str]) -> Event:
    return event.model_copy(update={"confirmed": bool(confirmed_by), "confirmed_by": sorted(confirmed_by)})


class AlarmVerification:
    """Keeps the fire alarms that are on, by dedup key."""

    def __init__(self, window_s: float = 120.0) -> None:
        self.window = timedelta(seconds=window_s)
        self._alarms: dict[str, _Alarm] = {}

    def apply(self, event: Event) -> list[Event]:
        """The event, marked when it is a fire alarm, then an UPDATE for each alarm it newly confirms."""
        if event.kind is not EventKind.FIRE or event.test:
            return [event]
        key = event.dedup_key
        if event.state is EventState.END:
            alarm = self._alarms.pop(key, None)
            return [_marked(event, alarm.confirmed_by if alarm else frozenset())]
        alarm = self._alarms.get(key)
        if alarm is not None:
            return [_marked(event, alarm.confirmed_by)]
        device = event.place.device or ""
        peers = [
            a
            for a in self._alarms.values()
            if a.start.place.site == event.place.site
            and hazard(a.start.type) == hazard(event.type)
            and a.start.place.device != device
            and abs(event.ts - a.start.ts) <= self.window
        ]
        group = frozenset({device, *(a.start.place.device or "" for a in peers)}) if peers else frozenset()
        self._alarms[key] = _Alarm(event, group)
        updates = []
        for peer in peers:
            if not group <= peer.confirmed_by:
                peer.confirmed_by |= group
                log.info("%s confirmed: %s in alarm", peer.start.dedup_key, ", ".join(sorted(peer.confirmed_by)))
                updates.append(
                    _marked(peer.start, peer.confirmed_by).model_copy(
                        update={"id": time_id(), "ts": event.ts, "state": EventState.UPDATE}
                    )
                )
        return [_marked(event, group), *updates]

    def export(self, key: str) -> dict[str, Any] | None:
        """The alarm under ``key`` as JSON-ready data, or None when none is on."""
        alarm = self._alarms.get(key)
        if alarm is None:
            return None
        return {"start": alarm.start.model_dump(mode="json"), "confirmed_by": sorted(alarm.confirmed_by)}

    def restore(self, alarms: dict[str, dict[str, Any]]) -> None:
        """Takes back alarms that ``export`` gave, by key."""
        for key, data in alarms.items():
            self._alarms[key] = _Alarm(Event.model_validate(data["start"]), frozenset(data["confirmed_by"]))
