"""Adapters, sensor rules and the alert policy, on recorded-style zigbee2mqtt payloads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.models import Event, EventKind, EventState, Place, Role
from alerts.policy import AlertPolicy
from detectors.sensor_rules import SensorRules
from ingest.adapters import PayloadError, parse_zigbee2mqtt

PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="smoke-1")


def test_zigbee2mqtt_keeps_unknown_numeric_fields_and_ignores_text() -> None:
    payload = b'{"smoke": false, "battery": 91, "voltage": 3000, "new_field": 4.5, "update": {"state": "idle"}}'
    readings = {r.quantity: (r.value, r.unit) for r in parse_zigbee2mqtt(payload, PLACE)}
    assert readings == {"smoke": (0.0, ""), "battery": (91.0, "%"), "voltage": (3000.0, "mV"), "new_field": (4.5, "")}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"smoke": "true"}', "smoke: Input should be a valid boolean"),
        (b'{"battery": "full"}', "battery: Input should be a valid number"),
    ],
)
def test_zigbee2mqtt_refuses_what_it_cannot_read(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse_zigbee2mqtt(payload, PLACE)


def test_flags_raise_fire_and_trouble_events_on_change_only() -> None:
    rules = SensorRules(source="n1", names={"smoke-1": "Stairwell"})
    first = rules.apply(parse_zigbee2mqtt(b'{"smoke": true, "battery_low": true}', PLACE))
    assert sorted((e.kind, e.type, e.state) for e in first) == [
        (EventKind.FIRE, "smoke", EventState.START),
        (EventKind.TROUBLE, "battery_low", EventState.START),
    ]
    assert next(e for e in first if e.type == "smoke").title == "Smoke alarm at Stairwell"
    assert rules.apply(parse_zigbee2mqtt(b'{"smoke": true, "battery_low": true}', PLACE)) == []
    cleared = rules.apply(parse_zigbee2mqtt(b'{"smoke": false, "battery_low": true}', PLACE))
    assert [(e.type, e.state) for e in cleared] == [("smoke", EventState.END)]


def test_policy_reopens_within_cooldown_and_raises_anew_after_it() -> None:
    policy = AlertPolicy(cooldown_s=60)
    start = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    first = policy.apply(start)
    assert first.route is Role.FIRE and first.active
    end = Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=PLACE, source="n1",
                ts=start.ts + timedelta(seconds=10))  # fmt: skip
    assert policy.apply(end).active is False
    assert policy.apply(end) is None
    soon = start.model_copy(update={"ts": start.ts + timedelta(seconds=30)})
    reopened = policy.apply(soon)
    assert reopened.id == first.id and reopened.active and reopened.count == 2
    policy.apply(end.model_copy(update={"ts": start.ts + timedelta(seconds=40)}))
    later = policy.apply(start.model_copy(update={"ts": start.ts + timedelta(seconds=200)}))
    assert later.id != first.id and later.count == 1
