"""Alert policy: turns Events into Alerts, one alert per ongoing situation.

Events with the same dedup key update one alert (count, last seen, newest
details) instead of raising a new one. Under one key several conditions may be
open at once (two people in one zone, each its own track): the alert clears
when the last of them ends. A momentary event (a line crossed) raises or
updates an alert that is not ongoing. A situation that starts again within the
cooldown reopens the cleared alert, so a detector that flaps is still one
alert for the desk. A test (an event marked ``test``, such as a smoke
detector's test button) is stored as an event but never raises an alert:
nobody is dispatched to a test.

An alert carries its newest event's confirmation and the newest readings
(an event without any, such as a sensor gone silent, keeps the last ones),
and the newest event's free-form ``attributes`` (trigger, zone, track, a
report's text) as details for the desk: no one reads a contract from them.

What a restarted node needs to go on updating the same alerts is ``export(key)``
(the alert and its open conditions as JSON-ready data) and ``restore``.

Example:
    >>> from alerts.core.models import Event, EventKind, EventState, Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> policy = AlertPolicy(cooldown_s=60)
    >>> a = policy.apply(Event(kind=EventKind.FIRE, type="smoke", place=place, source="n1"))
    >>> b = policy.apply(Event(kind=EventKind.FIRE, type="smoke", place=place, source="n1"))
    >>> (a.id == b.id, b.count, b.revision)
    (True, 2, 2)
    >>> policy.apply(Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=place, source="n1")).active
    False
    >>> policy.apply(Event(kind=EventKind.FIRE, type="smoke", place=place, source="n1", confirmed=True,
    ...                    confirmed_by=["smoke-1", "smoke-2"])).confirmed_by
    ['smoke-1', 'smoke-2']
    >>> policy.apply(Event(kind=EventKind.FIRE, type="test", place=place, source="n1", test=True))
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from alerts.core.models import ROUTES, Alert, Event, EventState, Severity

log = logging.getLogger(__name__)


def _details(alert: Alert, event: Event) -> dict[str, Any]:
    """What an alert takes of its newest event besides counts and times: see the module docstring."""
    confirmed = event.confirmed is not None
    return {
        "readings": event.readings or alert.readings,
        "confirmed": event.confirmed if confirmed else alert.confirmed,
        "confirmed_by": event.confirmed_by if confirmed else alert.confirmed_by,
        "attributes": event.attributes,
    }


class AlertPolicy:
    """Dedup and cooldown for the events of one node."""

    def __init__(self, cooldown_s: float = 300.0) -> None:
        self.cooldown = timedelta(seconds=cooldown_s)
        self._alerts: dict[str, Alert] = {}
        self._open: dict[str, set[str]] = {}

    def apply(self, event: Event) -> Alert | None:
        """The alert this event raises or updates, or None when it changes nothing or is a test."""
        if event.test:
            return None
        key = event.dedup_key
        current = self._alerts.get(key)
        still_open = self._open.setdefault(key, set())
        if event.state is EventState.END:
            still_open.discard(event.condition)
            if not still_open:
                alert = self._clear(current, event)
            else:
                alert = self._update(current, event, active=True) if current is not None and current.active else None
        else:
            momentary = event.state is EventState.INSTANT
            if not momentary:
                still_open.add(event.condition)
            if current is None or (not current.active and event.ts - (current.cleared_at or event.ts) > self.cooldown):
                alert = self._raise(event, active=not momentary)
            else:
                alert = self._update(current, event, active=current.active or not momentary)
        if alert is not None:
            self._alerts[key] = alert
        return alert

    def _raise(self, event: Event, active: bool) -> Alert:
        log.info("new %s alert %s: %s", event.kind, event.dedup_key, event.title)
        return Alert(
            ts=event.ts,
            kind=event.kind,
            type=event.type,
            severity=event.severity,
            place=event.place,
            source=event.source,
            title=event.title,
            route=ROUTES[event.kind],
            dedup_key=event.dedup_key,
            active=active,
            cleared_at=None if active else event.ts,
            last_seen=event.ts,
            last_event_id=event.id,
            readings=event.readings,
            confirmed=event.confirmed,
            confirmed_by=event.confirmed_by,
            attributes=event.attributes,
        )

    def _update(self, alert: Alert, event: Event, active: bool) -> Alert:
        return alert.model_copy(
            update={
                "active": active,
                "cleared_at": None if active else event.ts,
                "count": alert.count + 1,
                "last_seen": max(alert.last_seen, event.ts),
                "severity": max(alert.severity, event.severity, key=list(Severity).index),
                # One condition of several ending says nothing about the situation: keep its title.
                "title": alert.title if event.state is EventState.END else event.title or alert.title,
                "revision": alert.revision + 1,
                "last_event_id": event.id,
                **_details(alert, event),
            }
        )

    def _clear(self, alert: Alert | None, event: Event) -> Alert | None:
        if alert is None or not alert.active:
            return None
        log.info("cleared alert %s", event.dedup_key)
        return alert.model_copy(
            update={
                "active": False,
                "cleared_at": event.ts,
                "last_seen": max(alert.last_seen, event.ts),
                "revision": alert.revision + 1,
                "last_event_id": event.id,
                **_details(alert, event),
            }
        )

    def export(self, key: str) -> dict[str, Any] | None:
        """The alert under ``key`` and its open conditions as JSON-ready data; None if there is none."""
        alert = self._alerts.get(key)
        if alert is None:
            return None
        return {"alert": alert.model_dump(mode="json"), "open": sorted(self._open.get(key, ()))}

    def restore(self, alerts: dict[str, dict[str, Any]]) -> None:
        """Takes back what ``export`` gave, by key."""
        for key, data in alerts.items():
            self._alerts[key] = Alert.model_validate(data["alert"])
            self._open[key] = set(data["open"])
