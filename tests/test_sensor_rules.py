"""Adapters, sensor rules, verification and the alert policy, on recorded-style payloads, without services."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fire_helpers import alert_of

from alerts.core.models import Alert, Event, EventKind, EventState, Place, Reading, Role, Severity
from alerts.core.policy import AlertPolicy
from detectors.heat import HeatConfig, HeatRule
from detectors.sensor_rules import SensorRuleConfig, SensorRules
from detectors.verification import AlarmVerification
from edge.config import ConfigError, parse_config
from ingest.adapters import SensorRoutes
from ingest.downsample import DownsampleConfig, Downsampler
from ingest.native import NATIVE
from ingest.sensors import PayloadError, parse_availability
from ingest.tasmota import TASMOTA
from ingest.zigbee2mqtt import ZIGBEE2MQTT

PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="smoke-1")
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def zigbee(payload: bytes, ts: datetime = T0) -> list[Reading]:
    decoded = ZIGBEE2MQTT.parse(payload, PLACE, ts)
    assert decoded.problems == []
    return decoded.readings


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def saved(export: Callable[[str], dict[str, Any] | None], keys: list[str]) -> dict[str, dict[str, Any]]:
    """What ``export`` gives for each key, as the edge state keeps it; each key must have some."""
    states = {}
    for key in keys:
        state = export(key)
        assert state is not None, f"nothing to save for {key}"
        states[key] = state
    return states


def test_zigbee2mqtt_keeps_unknown_numeric_fields_and_ignores_text() -> None:
    payload = b'{"smoke": false, "battery": 91, "voltage": 3000, "new_field": 4.5, "update": {"state": "idle"}}'
    readings = {r.quantity: (r.value, r.unit) for r in zigbee(payload)}
    assert readings == {"smoke": (0.0, ""), "battery": (91.0, "%"), "voltage": (3000.0, "mV"), "new_field": (4.5, "")}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_a_payload_that_is_no_json_object_is_refused_whole(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        ZIGBEE2MQTT.parse(payload, PLACE, T0)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"smoke": "true", "battery": 80}', "smoke: expected a bool (true or false), got 'true'"),
        (b'{"smoke": false, "battery": "full"}', "battery: expected a number, got 'full'"),
        (b'{"smoke": false, "temperature": 900}', "temperature: 900 °C is outside the physical range -40..125 °C"),
        (b'{"smoke": false, "humidity": 101.5}', "humidity: 101.5 % is outside the physical range 0..100 %"),
        (b'{"smoke": false, "co": -3}', "co: -3 ppm is outside the physical range >= 0 ppm"),
        (b'{"smoke": false, "temperature": NaN}', "temperature: expected a finite number, got nan"),
    ],
)
def test_a_bad_field_is_refused_and_the_rest_of_the_message_kept(payload: bytes, problem: str) -> None:
    decoded = ZIGBEE2MQTT.parse(payload, PLACE, T0)
    assert decoded.problems == [problem]
    assert len(decoded.readings) == 1


def test_tasmota_flattens_sensors_converts_fahrenheit_and_reads_switches() -> None:
    payload = (
        b'{"Time": "2024-05-01T18:00:00", "DS18B20": {"Id": "0316A2", "Temperature": 71.6},'
        b' "SHT3X": {"Temperature": 70.0, "Humidity": 40.1, "DewPoint": 45.5}, "Switch1": "ON", "TempUnit": "F"}'
    )
    readings = {r.quantity: (r.value, r.unit) for r in TASMOTA.parse(payload, PLACE, T0).readings}
    assert readings == {
        "ds18b20.temperature": (22.0, "°C"),
        "sht3x.temperature": (21.11, "°C"),
        "sht3x.humidity": (40.1, "%"),
        "sht3x.dewpoint": (7.5, ""),
        "switch1": (1.0, ""),
    }
    hot = TASMOTA.parse(b'{"DS18B20": {"Temperature": 900}, "TempUnit": "C"}', PLACE, T0)
    assert hot.problems == ["ds18b20.temperature: 900 °C is outside the physical range -40..125 °C"]


def test_native_messages_carry_their_own_time_and_name_their_device() -> None:
    payload = b'{"device": "smoke-1", "ts": "2024-05-01T18:00:00+08:00", "readings": {"smoke": true}, "rssi": -70}'
    readings = NATIVE.parse(payload, PLACE, at(99)).readings
    assert [(r.quantity, r.value, r.ts) for r in readings] == [("smoke", 1.0, T0), ("rssi", -70.0, T0)]
    assert [r.ts for r in NATIVE.parse(b'{"readings": {"smoke": false}}', PLACE, at(99)).readings] == [at(99)]
    with pytest.raises(PayloadError, match="device 'smoke-2' publishes on the topic of 'smoke-1'"):
        NATIVE.parse(b'{"device": "smoke-2"}', PLACE, T0)
    with pytest.raises(PayloadError, match="wrong field types: ts: "):
        NATIVE.parse(b'{"ts": "yesterday", "readings": {}}', PLACE, T0)
    with pytest.raises(PayloadError, match="wrong field types: readings: "):
        NATIVE.parse(b'{"readings": [21.5]}', PLACE, T0)


@pytest.mark.parametrize(
    ("payload", "online"),
    [(b'{"state": "online"}', True), (b'{"state":"offline"}', False), (b"online", True), (b"Offline", False)],
)
def test_availability_in_every_dialect(payload: bytes, online: bool) -> None:
    assert parse_availability(payload).online is online


def test_availability_refuses_anything_else() -> None:
    with pytest.raises(PayloadError, match="availability must be online or offline"):
        parse_availability(b"maybe")


SENSOR_CONFIG = """\
node_id: n1
site: {{id: s1, sub_district: sd, community: c, grid: g}}
cameras: [{{id: cam-1, capture: {{url: "rtsp://10.0.0.5/1"}}}}]
sensors:
  - {{id: d1, adapter: {adapter}, topic: "{topic}", cameras: {cameras}}}
"""


@pytest.mark.parametrize(
    ("adapter", "topic", "cameras", "error"),
    [
        ("tasmota", "tele/kitchen/SENSOR", "[cam-1]", None),
        ("tasmota", "tele/kitchen", "[]", "sensors.0.topic: a Tasmota topic is <prefix>/<device>/SENSOR"),
        ("zigbee2mqtt", "zigbee2mqtt/bridge/state", "[]", "sensors.0.topic: name the device's state topic"),
        ("zigbee2mqtt", "zigbee2mqtt/hall/availability", "[]", "sensors.0.topic: name the device's state topic"),
        ("native", "patrolnet/v1/s1", "[]", "sensors.0.topic: patrolnet/v1/ is the node's own uplink"),
        ("native", "sensors/d1", "[cam-1, cam-1]", "sensors.0.cameras: a camera is linked once"),
        ("native", "sensors/d1", "[cam/1]", "sensors.0.cameras.0: String should match pattern"),
    ],
)
def test_a_sensor_config_names_a_topic_its_adapter_knows_and_cameras_once(
    adapter: str, topic: str, cameras: str, error: str | None
) -> None:
    text = SENSOR_CONFIG.format(adapter=adapter, topic=topic, cameras=cameras)
    if error is None:
        assert parse_config(text).sensors[0].cameras == ["cam-1"]
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "node.yaml")
    assert str(caught.value).startswith(f"node.yaml:5: {error}"), str(caught.value)


def test_a_sensor_links_only_to_cameras_of_the_node() -> None:
    text = SENSOR_CONFIG.format(adapter="native", topic="sensors/d1", cameras="[cam-1, cam-2]")
    with pytest.raises(ConfigError, match=r"^node.yaml:4: sensors: sensor d1 links to cameras not in cameras: cam-2"):
        parse_config(text, "node.yaml")


def test_routes_subscribe_to_adapter_wildcards_once_and_know_the_bridge() -> None:
    routes = SensorRoutes(
        [
            ("a", "zigbee2mqtt", "zigbee2mqtt/a"),
            ("b", "zigbee2mqtt", "zigbee2mqtt/floor 2/b"),
            ("c", "native", "patrolnet/sensors/c"),
            ("d", "native", "patrolnet/sensors/wing/d"),
        ]
    )
    assert routes.subscriptions() == ["patrolnet/sensors/#", "zigbee2mqtt/#"]
    stair, wing = routes.route("zigbee2mqtt/floor 2/b"), routes.route("patrolnet/sensors/wing/d/availability")
    assert stair is not None and stair.device == "b"
    assert wing is not None and wing.availability
    assert routes.is_unknown_device("zigbee2mqtt/floor 2/x")
    assert not routes.is_unknown_device("zigbee2mqtt/a/set")
    assert not routes.is_unknown_device("zigbee2mqtt/bridge/state")
    assert not routes.is_unknown_device("elsewhere/a")


def test_flags_raise_fire_and_trouble_events_on_change_only() -> None:
    rules = SensorRules(source="n1")
    rules.watch(PLACE, name="Stairwell")
    first = rules.apply(zigbee(b'{"smoke": true, "battery_low": true}'))
    assert sorted((e.kind, e.type, e.state) for e in first) == [
        (EventKind.FIRE, "smoke", EventState.START),
        (EventKind.TROUBLE, "battery_low", EventState.START),
    ]
    assert next(e for e in first if e.type == "smoke").title == "Smoke alarm at Stairwell"
    assert rules.apply(zigbee(b'{"smoke": true, "battery_low": true}')) == []
    cleared = rules.apply(zigbee(b'{"smoke": false, "battery_low": true}'))
    assert [(e.type, e.state, e.title) for e in cleared] == [
        ("smoke", EventState.END, "Smoke alarm cleared at Stairwell")
    ]


def test_battery_under_the_threshold_is_low_even_when_the_flag_says_not() -> None:
    rules = SensorRules(source="n1")
    rules.watch(PLACE, SensorRuleConfig(battery_low_pct=25))
    assert rules.apply(zigbee(b'{"battery": 30, "battery_low": false}')) == []
    low = rules.apply(zigbee(b'{"battery": 24, "battery_low": false}'))
    assert [(e.type, e.state, e.severity) for e in low] == [("battery_low", EventState.START, Severity.MINOR)]
    assert [e.state for e in rules.apply(zigbee(b'{"battery": 100}'))] == [EventState.END]


def test_a_test_is_recorded_holds_the_alarm_back_and_an_alarm_left_on_after_it_starts() -> None:
    rules = SensorRules(source="n1")
    rules.watch(PLACE)
    pressed = rules.apply(zigbee(b'{"test": true, "smoke": true}'))
    assert [(e.type, e.state, e.severity, e.test) for e in pressed] == [("test", EventState.START, Severity.INFO, True)]
    assert AlertPolicy().apply(pressed[0]) is None
    assert rules.apply(zigbee(b'{"smoke": true}')) == []
    released = rules.apply(zigbee(b'{"test": false, "smoke": true}'))
    assert [(e.type, e.state) for e in released] == [("test", EventState.END), ("smoke", EventState.START)]


def test_heat_threshold_with_hysteresis_and_rate_of_rise_from_reading_times() -> None:
    rules = SensorRules(source="n1")
    rules.watch(PLACE, SensorRuleConfig(heat=HeatConfig(threshold_c=57, rate_c_per_min=8.3, window_s=60)))

    def temperature(seconds: float, value: float) -> list[tuple[str, EventState]]:
        reading = Reading(ts=at(seconds), place=PLACE, quantity="temperature", value=value, unit="°C")
        return [(e.type, e.state) for e in rules.apply([reading])]

    assert temperature(0, 22.0) == []
    assert temperature(10, 24.0) == []  # 12 °C/min, but over 10 s: too short a span to call it
    assert temperature(30, 27.0) == [("rate_of_rise", EventState.START)]  # 9.9 °C/min fitted to the three
    assert temperature(60, 58.0) == [("heat", EventState.START)]
    assert temperature(120, 56.0) == [("rate_of_rise", EventState.END)]  # -2 °C/min, still within the hysteresis
    assert temperature(180, 54.9) == [("heat", EventState.END)]
    assert temperature(240, 54.8) == []


def test_rate_of_rise_shrugs_off_a_noisy_sensor_and_still_catches_a_real_rise() -> None:
    rule, noise = HeatRule(HeatConfig(rate_c_per_min=8.3, window_s=60)), random.Random(7)
    # Twenty minutes of ±3 °C noise once a second, across several moves of the fit's time origin.
    flat = [rule.update(at(s), 21 + noise.uniform(-3, 3))[0].get("rate_of_rise") for s in range(1200)]
    assert True not in flat
    rising = [rule.update(at(1200 + s), 21 + s / 5 + noise.uniform(-3, 3)) for s in range(1, 90)]
    conditions, details = rising[-1]
    assert conditions["rate_of_rise"] and 10 < details["rate_c_per_min"] < 14  # 12 °C/min under the noise


def test_silence_offline_and_their_recovery_take_the_callers_clock() -> None:
    rules = SensorRules(source="n1")
    rules.watch(PLACE, SensorRuleConfig(heartbeat_s=60), since=T0)
    assert rules.check_silence(at(59)) == []
    silent = rules.check_silence(at(61))
    assert [(e.kind, e.type, e.state) for e in silent] == [(EventKind.TROUBLE, "sensor_silent", EventState.START)]
    assert rules.check_silence(at(120)) == []
    assert [(e.type, e.state) for e in rules.seen("smoke-1", at(130))] == [("sensor_silent", EventState.END)]
    assert [(e.type, e.state) for e in rules.availability("smoke-1", False, at(140))] == [
        ("sensor_offline", EventState.START)
    ]
    state = rules.state("smoke-1")
    assert state is not None and not state.online
    assert [(e.type, e.state) for e in rules.availability("smoke-1", True, at(150))] == [
        ("sensor_offline", EventState.END)
    ]


def test_two_detectors_within_the_window_confirm_each_other_and_one_device_is_no_pair() -> None:
    verification = AlarmVerification(window_s=120)
    site = PLACE.model_copy(update={"device": None})

    def alarm(device: str, kind: str, seconds: float, state: EventState = EventState.START) -> list[Event]:
        event = Event(ts=at(seconds), kind=EventKind.FIRE, type=kind, state=state, place=site.with_device(device),
                      source="n1", attributes={"trigger": kind})  # fmt: skip
        return verification.apply(event)

    [first] = alarm("a", "smoke", 0)
    assert (first.confirmed, first.confirmed_by, first.attributes) == (False, [], {"trigger": "smoke"})
    assert alarm("a", "heat", 10)[0].confirmed is False
    second = alarm("b", "smoke", 100)
    assert [(e.place.device, e.type, e.state, e.confirmed_by) for e in second] == [
        ("b", "smoke", EventState.START, ["a", "b"]),
        ("a", "smoke", EventState.UPDATE, ["a", "b"]),
        ("a", "heat", EventState.UPDATE, ["a", "b"]),
    ]
    assert alarm("a", "smoke", 110, EventState.END)[0].confirmed_by == ["a", "b"]
    assert alarm("c", "smoke", 300)[0].confirmed is False  # b started 200 s before


def test_confirmation_sends_the_earlier_alert_again_with_a_new_revision() -> None:
    policy, verification = AlertPolicy(), AlarmVerification(window_s=120)
    site = PLACE.model_copy(update={"device": None})
    alerts = []
    for device, seconds in (("a", 0), ("b", 30)):
        start = Event(ts=at(seconds), kind=EventKind.FIRE, type="smoke", place=site.with_device(device), source="n1")
        alerts += [alert_of(policy, e) for e in verification.apply(start)]
    first, second, first_again = alerts
    assert first.confirmed is False and first.revision == 1
    assert second.confirmed_by == ["a", "b"]
    assert first_again.id == first.id and first_again.revision == 2 and first_again.confirmed is True


def test_downsampling_holds_back_chatter_but_never_a_message_that_raised_an_event() -> None:
    thin = Downsampler({"smoke-1": DownsampleConfig(min_interval_s=10)})
    chatter = [zigbee(b'{"smoke": false, "linkquality": 100}', at(s)) for s in (0, 1, 2, 11)]
    assert [len(thin.filter(r)) for r in chatter] == [2, 0, 0, 2]
    assert len(thin.filter(zigbee(b'{"smoke": true, "linkquality": 90}', at(12)), keep_all=True)) == 2


def test_policy_reopens_within_cooldown_and_raises_anew_after_it() -> None:
    policy = AlertPolicy(cooldown_s=60)
    start = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    first = alert_of(policy, start)
    assert first.route is Role.FIRE and first.active
    end = Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=PLACE, source="n1",
                ts=start.ts + timedelta(seconds=10))  # fmt: skip
    assert alert_of(policy, end).active is False
    assert policy.apply(end) is None
    soon = start.model_copy(update={"ts": start.ts + timedelta(seconds=30)})
    reopened = alert_of(policy, soon)
    assert reopened.id == first.id and reopened.active and reopened.count == 2
    policy.apply(end.model_copy(update={"ts": start.ts + timedelta(seconds=40)}))
    later = alert_of(policy, start.model_copy(update={"ts": start.ts + timedelta(seconds=200)}))
    assert later.id != first.id and later.count == 1


def test_an_alert_with_several_conditions_clears_when_the_last_one_ends() -> None:
    policy = AlertPolicy()
    cam = PLACE.with_device("cam-1")

    def intrusion(track: str, state: EventState) -> Event:
        return Event(kind=EventKind.SECURITY, type="intrusion", state=state, place=cam, source="n1",
                     subject="intrusion:walkway", condition=track)  # fmt: skip

    first = alert_of(policy, intrusion("7", EventState.START))
    second = alert_of(policy, intrusion("9", EventState.START))
    assert second.id == first.id and second.active
    still = alert_of(policy, intrusion("7", EventState.END).model_copy(update={"title": "ended"}))
    assert still.active is True and still.title != "ended"
    cleared = alert_of(policy, intrusion("9", EventState.END))
    assert cleared.id == first.id and cleared.active is False
    other_zone = Event(kind=EventKind.SECURITY, type="intrusion", place=cam, source="n1", subject="intrusion:gate")
    assert alert_of(policy, other_zone).id != first.id


def test_a_momentary_event_raises_an_alert_that_is_not_ongoing() -> None:
    policy = AlertPolicy(cooldown_s=60)
    cam = PLACE.with_device("cam-1")
    crossing = Event(kind=EventKind.SECURITY, type="line_crossing", state=EventState.INSTANT, place=cam, source="n1")
    first = alert_of(policy, crossing)
    assert first.active is False and first.cleared_at == crossing.ts
    again = alert_of(policy, crossing.model_copy(update={"ts": crossing.ts + timedelta(seconds=10)}))
    assert again.id == first.id and again.count == 2 and again.active is False
    later = alert_of(policy, crossing.model_copy(update={"ts": crossing.ts + timedelta(seconds=200)}))
    assert later.id != first.id


@pytest.mark.parametrize(
    ("first", "second", "confirmed"),
    [
        ("gas", "smoke", False),
        ("smoke", "gas", False),
        ("carbon_monoxide", "smoke", False),
        ("gas", "carbon_monoxide", False),
        ("smoke", "heat", True),
        ("heat", "visual_flame", True),
        ("smoke", "visual_smoke", True),
        ("rate_of_rise", "smoke", True),
        ("carbon_monoxide", "carbon_monoxide", True),
        ("gas", "gas", True),
    ],
)
def test_only_detectors_of_one_hazard_confirm_each_other(first: str, second: str, confirmed: bool) -> None:
    verification = AlarmVerification(window_s=120)
    site = PLACE.model_copy(update={"device": None})
    verification.apply(Event(ts=at(0), kind=EventKind.FIRE, type=first, place=site.with_device("a"), source="n1"))
    out = verification.apply(
        Event(ts=at(30), kind=EventKind.FIRE, type=second, place=site.with_device("b"), source="n1")
    )
    assert out[0].confirmed is confirmed
    assert [e.place.device for e in out] == (["b", "a"] if confirmed else ["b"])


def test_restored_state_updates_the_alarm_still_on_and_ends_the_one_cleared_meanwhile() -> None:
    site = PLACE.model_copy(update={"device": None})
    rules, verification, policy = SensorRules(source="n1"), AlarmVerification(), AlertPolicy()
    for device in ("a", "b"):
        rules.watch(site.with_device(device))
    alerts = {}
    for device in ("a", "b"):
        for event in rules.apply([Reading(ts=at(0), place=site.with_device(device), quantity="smoke", value=1.0)]):
            for marked in verification.apply(event):
                alerts[marked.place.device or ""] = alert_of(policy, marked)

    restarted = (SensorRules(source="n1"), AlarmVerification(), AlertPolicy())
    for device in ("a", "b"):
        restarted[0].watch(site.with_device(device))
    keys = [alerts["a"].dedup_key, alerts["b"].dedup_key]
    restarted[0].restore(saved(rules.export, ["a", "b"]))
    restarted[1].restore(saved(verification.export, keys))
    restarted[2].restore(saved(policy.export, keys))

    def after_restart(device: str, smoke: float) -> list[tuple[EventState, Alert]]:
        readings = [Reading(ts=at(60), place=site.with_device(device), quantity="smoke", value=smoke)]
        return [
            (e.state, alert_of(restarted[2], e))
            for raw in restarted[0].apply(readings)
            for e in restarted[1].apply(raw)
        ]

    [(state_a, alert_a)] = after_restart("a", 1.0)
    [(state_b, alert_b)] = after_restart("b", 0.0)
    assert state_a is EventState.UPDATE and alert_a.id == alerts["a"].id and alert_a.active
    assert alert_a.revision > alerts["a"].revision
    assert state_b is EventState.END and alert_b.id == alerts["b"].id and not alert_b.active
    assert after_restart("a", 1.0) == [], "confirmed once after the restart, then it is the same alarm again"
