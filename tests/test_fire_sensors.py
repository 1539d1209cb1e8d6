"""Fire sensors of every adapter through a real broker, the edge node and ingest, into a real database.

Recorded-style zigbee2mqtt, Tasmota and native payloads are published on the
node's local broker; the tests read back the readings, events, alerts and
dead letters that ingest stored. Rules that take time (rate of rise,
heartbeat) run on the payloads' own times and on the node's ``tick(now)``,
so nothing here sleeps for minutes.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import edge_and_ingest, eventually, mqtt_client
from fire_helpers import node_config, publish, query

from alerts.core.models import Heartbeat, utc_now
from alerts.core.protocol import uplink_topic
from deploy.local.services import Service
from edge.node import EdgeNode

SMOKE_A, SMOKE_B = "zigbee2mqtt/b3-stair-smoke", "zigbee2mqtt/b5-bike-shed-smoke"
KITCHEN = "tele/b2-kitchen/SENSOR"
BOILER = "patrolnet/sensors/smoke-b1-boiler"
QUIET = {"smoke": False, "battery": 87, "battery_low": False, "tamper": False, "linkquality": 120}
TASMOTA_STATE = {"Time": "2024-05-01T18:00:00", "DS18B20": {"Id": "0316A2", "Temperature": 21.5}, "TempUnit": "C"}


SENSORS = f"""\
  - {{id: smoke-b3-stair, adapter: zigbee2mqtt, topic: {SMOKE_A}, name: "Building 3, stairwell", heartbeat_s: 60}}
  - {{id: smoke-b5-bikes, adapter: zigbee2mqtt, topic: {SMOKE_B}, battery_low_pct: 25}}
  - {{id: heat-b2-kitchen, adapter: tasmota, topic: {KITCHEN}, heat: {{quantity: ds18b20.temperature}}}}
  - {{id: smoke-b1-boiler, adapter: native, topic: {BOILER}}}"""


@pytest.fixture
def node(broker: Service, database_url: str, tmp_path: Path) -> Iterator[EdgeNode]:
    with edge_and_ingest(node_config(broker.url, tmp_path / "outbox.sqlite3", SENSORS), broker, database_url) as node:
        yield node


def events(database_url: str) -> list[tuple]:
    """(device, type, state) of every stored event, oldest first."""
    return query(database_url, "SELECT device, type, state FROM events ORDER BY ts, received_at")


def wait_events(database_url: str, count: int) -> list[tuple]:
    return eventually(lambda: (got := events(database_url)) and len(got) >= count and got)


def test_zigbee2mqtt_smoke_alarm_and_restore_store_readings_events_and_the_alert(node, sensors, database_url) -> None:
    publish(sensors, {**QUIET, "smoke": True, "temperature": 24.5}, SMOKE_A)
    publish(sensors, QUIET, SMOKE_A)
    assert wait_events(database_url, 2) == [
        ("smoke-b3-stair", "smoke", "start"),
        ("smoke-b3-stair", "smoke", "end"),
    ]
    readings = eventually(lambda: len(r := query(database_url, "SELECT quantity, value FROM readings")) == 11 and r)
    assert ("smoke", 1.0) in readings and ("smoke", 0.0) in readings and ("temperature", 24.5) in readings
    [(revision, confirmed, readings)] = eventually(
        lambda: query(database_url, "SELECT revision, confirmed, readings FROM alerts WHERE NOT active")
    )
    assert revision == 2 and confirmed is False and readings["smoke"] == 0.0


def test_tasmota_telemetry_raises_heat_and_its_lwt_offline_and_recovery(node, sensors, database_url) -> None:
    publish(sensors, TASMOTA_STATE, KITCHEN)
    eventually(lambda: query(database_url, "SELECT quantity, value, unit FROM readings"))
    assert query(database_url, "SELECT quantity, value, unit FROM readings") == [("ds18b20.temperature", 21.5, "°C")]
    publish(sensors, {**TASMOTA_STATE, "DS18B20": {"Id": "0316A2", "Temperature": 140.0}, "TempUnit": "F"}, KITCHEN)
    publish(sensors, b"Offline", "tele/b2-kitchen/LWT")
    publish(sensors, b"Online", "tele/b2-kitchen/LWT")
    assert wait_events(database_url, 3) == [
        ("heat-b2-kitchen", "heat", "start"),
        ("heat-b2-kitchen", "sensor_offline", "start"),
        ("heat-b2-kitchen", "sensor_offline", "end"),
    ]
    assert query(database_url, "SELECT kind, route, active FROM alerts ORDER BY ts") == [
        ("fire", "fire", True),
        ("trouble", "operator", False),
    ]
    [(attributes,)] = query(database_url, "SELECT attributes FROM events WHERE type = 'heat'")
    assert attributes["temperature_c"] == 60.0 and attributes["trigger"] == "heat"


def test_zigbee2mqtt_availability_offline_in_both_forms(node, sensors, database_url) -> None:
    publish(sensors, {"state": "offline"}, f"{SMOKE_A}/availability")
    publish(sensors, b"offline", f"{SMOKE_B}/availability")
    publish(sensors, {"state": "online"}, f"{SMOKE_A}/availability")
    got = wait_events(database_url, 3)
    assert sorted(got) == [
        ("smoke-b3-stair", "sensor_offline", "end"),
        ("smoke-b3-stair", "sensor_offline", "start"),
        ("smoke-b5-bikes", "sensor_offline", "start"),
    ]


def test_native_rate_of_rise_on_the_devices_own_times(node, sensors, database_url) -> None:
    start = utc_now() - timedelta(seconds=60)
    for seconds, celsius in ((0, 22.0), (20, 23.0), (40, 29.0)):
        ts = (start + timedelta(seconds=seconds)).isoformat()
        publish(sensors, {"device": "smoke-b1-boiler", "ts": ts, "readings": {"temperature": celsius}}, BOILER)
    assert wait_events(database_url, 1) == [("smoke-b1-boiler", "rate_of_rise", "start")]
    [(attributes, confirmed, readings)] = query(database_url, "SELECT attributes, confirmed, readings FROM events")
    assert attributes["rate_c_per_min"] == 10.5 and confirmed is False and readings == {"temperature": 29.0}
    assert eventually(lambda: query(database_url, "SELECT count(*) FROM readings"))[0][0] == 3
    assert query(database_url, "SELECT min(ts) FROM readings")[0][0] == start


def test_the_test_button_is_stored_and_never_raises_an_alert(node, sensors, database_url) -> None:
    publish(sensors, {**QUIET, "test": True, "smoke": True}, SMOKE_A)
    publish(sensors, {**QUIET, "test": False}, SMOKE_A)
    assert wait_events(database_url, 2) == [
        ("smoke-b3-stair", "test", "start"),
        ("smoke-b3-stair", "test", "end"),
    ]
    stored = query(database_url, "SELECT kind, severity, test, confirmed FROM events WHERE state = 'start'")
    assert stored == [("fire", "info", True, None)], "a test is not an alarm to verify"
    assert query(database_url, "SELECT count(*) FROM alerts") == [(0,)]
    assert node.counts["alerts"] == 0


def test_low_battery_raises_trouble_by_flag_and_by_percentage(node, sensors, database_url) -> None:
    publish(sensors, {**QUIET, "battery_low": True}, SMOKE_A)
    publish(sensors, {**QUIET, "battery": 22}, SMOKE_B)
    got = wait_events(database_url, 2)
    assert sorted(got) == [("smoke-b3-stair", "battery_low", "start"), ("smoke-b5-bikes", "battery_low", "start")]
    assert query(database_url, "SELECT DISTINCT kind, severity FROM alerts") == [("trouble", "minor")]


def test_heartbeat_expiry_raises_silence_and_the_node_reports_it_upstream(node, sensors, broker, database_url) -> None:
    heartbeats: queue.Queue[Heartbeat] = queue.Queue()
    topic = uplink_topic("willow-court", "heartbeats")
    with mqtt_client(
        broker, "test-heartbeats", topic, lambda c, u, m: heartbeats.put(Heartbeat.model_validate_json(m.payload))
    ):
        publish(sensors, QUIET, SMOKE_B)
        eventually(lambda: node.counts["readings"] == 5)
        node.tick(utc_now() + timedelta(seconds=61))
        assert wait_events(database_url, 1) == [("smoke-b3-stair", "sensor_silent", "start")]
        heartbeat = heartbeats.get(timeout=10)
    status = {d.device: d for d in heartbeat.devices}
    assert status["smoke-b3-stair"].online is False and status["smoke-b3-stair"].detail["conditions"] == ["silent"]
    assert status["smoke-b5-bikes"].online is True and status["smoke-b5-bikes"].detail["battery"] == 87.0
    assert status["heat-b2-kitchen"].type == "tasmota"
    assert heartbeat.counters["messages"] == 1 and heartbeat.counters["readings"] == 5
    # What left the node was acknowledged, or still waits in its spool: nothing else.
    assert heartbeat.counters["uplink_acked"] + heartbeat.counters["spool_pending"] >= 2
    publish(sensors, QUIET, SMOKE_A)
    # The start carries the tick's future time, so sorting puts the end first.
    assert wait_events(database_url, 2)[0] == ("smoke-b3-stair", "sensor_silent", "end")


def test_two_detectors_in_alarm_confirm_each_other(node, sensors, database_url) -> None:
    publish(sensors, {**QUIET, "smoke": True}, SMOKE_A)
    eventually(lambda: query(database_url, "SELECT 1 FROM alerts"))
    publish(sensors, {"readings": {"smoke": True}}, BOILER)

    def alerts() -> list[tuple]:
        return query(database_url, "SELECT device, revision, confirmed, confirmed_by FROM alerts ORDER BY ts")

    stored = eventually(lambda: (got := alerts()) and len(got) == 2 and got[0][1] == 2 and got)
    assert stored == [
        ("smoke-b3-stair", 2, True, ["smoke-b1-boiler", "smoke-b3-stair"]),
        ("smoke-b1-boiler", 1, True, ["smoke-b1-boiler", "smoke-b3-stair"]),
    ]
    assert wait_events(database_url, 3)[2] == ("smoke-b3-stair", "smoke", "update")


def test_bad_input_is_dead_lettered_with_the_reason_and_the_next_message_still_counts(
    node, sensors, database_url
) -> None:
    publish(sensors, b"\x00not json at all{", SMOKE_A)
    publish(sensors, {"smoke": "yes", "battery": 87}, SMOKE_A)
    publish(sensors, {"DS18B20": {"Temperature": 900}, "TempUnit": "C"}, KITCHEN)
    publish(sensors, {"ts": 1.5e20, "readings": {}}, BOILER)
    publish(sensors, QUIET, "zigbee2mqtt/unknown-thing")
    publish(sensors, TASMOTA_STATE, "tele/unknown/SENSOR")
    publish(sensors, {"level": "info", "message": "ignored"}, "zigbee2mqtt/bridge/logging")
    publish(sensors, {"state": "ignored, a command"}, f"{SMOKE_A}/set")
    publish(sensors, {**QUIET, "smoke": True}, SMOKE_B)

    assert wait_events(database_url, 1) == [("smoke-b5-bikes", "smoke", "start")]
    letters = eventually(
        lambda: (
            (got := query(database_url, "SELECT topic, reason FROM dead_letters WHERE source = 'test-node'"))
            and len(got) == 6
            and got
        )
    )
    reasons = dict(sorted(letters))
    assert reasons[KITCHEN] == "ds18b20.temperature: 900 °C is outside the physical range -40..125 °C"
    assert reasons[BOILER].startswith("wrong field types: ts: ")
    assert reasons["zigbee2mqtt/unknown-thing"] == reasons["tele/unknown/SENSOR"] == "unknown device"
    assert sorted(r for t, r in letters if t == SMOKE_A)[0].startswith("not JSON")
    assert "smoke: expected a bool" in sorted(r for t, r in letters if t == SMOKE_A)[1]
    # The wrong-typed smoke field is refused, the battery next to it still stored.
    assert eventually(lambda: query(database_url, "SELECT value FROM readings WHERE device = 'smoke-b3-stair'")) == [
        (87.0,)
    ]
    assert node.counts["dead_letters"] == 6 and node.counts["ignored"] == 2
