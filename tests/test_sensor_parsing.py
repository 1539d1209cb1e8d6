"""Poison sensor messages: each one is a dead letter with its reason, and the next smoke alarm still gets through.

The adapters are checked on their own first (bounded parsing, one reason per
poison), then every poison goes through a real broker, the edge node and a
real ingest worker into PostgreSQL, each followed by a real smoke alarm that
must reach the alerts table.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import edge_and_ingest, eventually, mqtt_client
from fire_helpers import query

from alerts.core.models import Place, Reading
from deploy.local.services import Service
from edge.config import parse_config
from ingest.adapters import ADAPTERS
from ingest.sensors import MAX_PAYLOAD_BYTES, PayloadError, readings_from

SMOKE = "zigbee2mqtt/b3-stair-smoke"
BOILER = "patrolnet/sensors/smoke-b1-boiler"
KITCHEN = "tele/b2-kitchen/SENSOR"
PLACE = Place(sub_district="n", community="c", grid="g", site="s", device="d")
DIGITS_5000 = b"9" * 5000

POISONS: list[tuple[str, str, bytes, str]] = [
    ("5000-digit int", SMOKE, b'{"smoke": false, "battery": ' + DIGITS_5000 + b"}", "a number of 5000 characters"),
    ("5000-digit float", SMOKE, b'{"smoke": false, "temperature": 1.' + DIGITS_5000 + b"}", "a number of 5002"),
    ("10,000-deep nesting", SMOKE, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested deeper than 32"),
    ("deep arrays", KITCHEN, b"[" * 10_000 + b"]" * 10_000, "nested deeper than 32"),
    ("over the cap", SMOKE, b'{"smoke": false, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "over the cap"),
    ("invalid UTF-8", SMOKE, b'{"smoke": "\xff\xfe\xfd"}', "not JSON"),
    ("native ts year 9999", BOILER, b'{"ts": "9999-12-31T23:59:59-14:00", "readings": {}}', "is outside 2000-01-01"),
    ("native ts year 1", BOILER, b'{"ts": "0001-01-01T00:00:00+14:00", "readings": {}}', "is outside 2000-01-01"),
    ("non-object JSON", SMOKE, b"[1, 2, 3]", "expected a JSON object, got list"),
    ("bare string", SMOKE, b'"smoke"', "expected a JSON object, got str"),
    ("NaN literal", SMOKE, b'{"smoke": false, "temperature": NaN}', "temperature: expected a finite number"),
    ("Infinity literal", KITCHEN, b'{"DS18B20": {"Temperature": Infinity}}', "expected a finite number"),
    ("empty payload", SMOKE, b"", "not JSON"),
]

ADAPTER_OF = {SMOKE: "zigbee2mqtt", BOILER: "native", KITCHEN: "tasmota"}


@pytest.mark.parametrize(("name", "topic", "payload", "reason"), POISONS, ids=[p[0] for p in POISONS])
def test_each_poison_is_refused_with_its_reason_quickly(name: str, topic: str, payload: bytes, reason: str) -> None:
    adapter = ADAPTERS[ADAPTER_OF[topic]]
    started = time.perf_counter()
    try:
        decoded = adapter.parse(payload, PLACE, datetime.now(UTC))
    except PayloadError as exc:
        why = str(exc)
    else:
        assert decoded.problems, f"{name} was read without a problem"
        why = "; ".join(decoded.problems)
    assert reason in why
    assert time.perf_counter() - started < 0.5, "bounded parsing must stay cheap"


def test_a_long_number_costs_its_field_and_never_the_alarm_next_to_it() -> None:
    payload = b'{"smoke": true, "battery": ' + DIGITS_5000 + b"}"
    decoded = ADAPTERS["zigbee2mqtt"].parse(payload, PLACE, datetime.now(UTC))
    assert [(r.quantity, r.value) for r in decoded.readings] == [("smoke", 1.0)]
    assert decoded.problems == ["battery: a number of 5000 characters (at most 40)"]


def test_readings_are_made_as_the_model_validates_them_in_utc() -> None:
    # readings_from makes readings without validating them again (Reading.checked): what it makes must be what
    # validation gives, the device's own zone turned into UTC, and a time without a zone refused as before.
    payload = b'{"ts": "2024-05-01T10:00:00+08:00", "readings": {"temperature": 21, "smoke": true}}'
    decoded = ADAPTERS["native"].parse(payload, PLACE, datetime.now(UTC))
    assert [Reading.model_validate_json(r.model_dump_json()) for r in decoded.readings] == decoded.readings
    assert {(r.quantity, r.value, r.unit, r.ts) for r in decoded.readings} == {
        ("temperature", 21.0, "°C", datetime(2024, 5, 1, 2, tzinfo=UTC)),
        ("smoke", 1.0, "", datetime(2024, 5, 1, 2, tzinfo=UTC)),
    }
    assert all(type(r.value) is float and r.ts.tzinfo is UTC for r in decoded.readings)
    with pytest.raises(ValueError, match="zone"):
        readings_from({"temperature": 21}, PLACE, datetime(2024, 5, 1, 10))


def node_yaml(broker_url: str, spool: Path) -> str:
    return f"""
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker_url}"}}
uplink: {{spool: "{spool}"}}
sensors:
  - {{id: smoke-b3-stair, adapter: zigbee2mqtt, topic: {SMOKE}}}
  - {{id: heat-b2-kitchen, adapter: tasmota, topic: {KITCHEN}, heat: {{quantity: ds18b20.temperature}}}}
  - {{id: smoke-b1-boiler, adapter: native, topic: {BOILER}}}
"""


def test_every_poison_is_dead_lettered_and_the_alarm_after_it_reaches_the_fire_desk(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    config = parse_config(node_yaml(broker.url, tmp_path / "outbox.sqlite3"))
    with edge_and_ingest(config, broker, database_url) as node, mqtt_client(broker, "test-sensors") as sensors:

        def alarm(smoke: bool) -> None:
            sensors.publish(SMOKE, json.dumps({"smoke": smoke}), qos=1).wait_for_publish(timeout=5)

        def fire_alerts(active: bool) -> int:
            sql = f"SELECT count(*) FROM alerts WHERE kind = 'fire' AND active = {active}"
            return query(database_url, sql)[0][0]

        for number, (name, topic, payload, _) in enumerate(POISONS, start=1):
            sensors.publish(topic, payload, qos=1).wait_for_publish(timeout=5)
            alarm(True)
            eventually(lambda: fire_alerts(True) == 1, timeout=20)
            alarm(False)
            # Each cleared alarm is one more revision of the one alert: the desk saw this alarm come and go.
            eventually(lambda n=number: query(database_url, "SELECT revision FROM alerts")[0][0] == 2 * n, timeout=20)
            assert fire_alerts(False) == 1, name

        letters = eventually(
            lambda: (
                (got := query(database_url, "SELECT topic, reason FROM dead_letters WHERE source = 'test-node'"))
                and len(got) >= len(POISONS)
                and got
            ),
            timeout=20,
        )
        starts = query(database_url, "SELECT count(*) FROM events WHERE type = 'smoke' AND state = 'start'")[0][0]
        ends = query(database_url, "SELECT count(*) FROM events WHERE type = 'smoke' AND state = 'end'")[0][0]
        counts = node.counts
    sent = len(POISONS)
    print(f"alarms sent / stored / lost / duplicated: {sent} / {starts} / {sent - starts} / {max(0, starts - sent)}")
    print(f"poisons sent / dead letters / lost: {sent} / {len(letters)} / {sent - len(letters)}")
    assert starts == ends == sent
    for name, topic, _, reason in POISONS:
        assert any(t == topic and reason in r for t, r in letters), f"no dead letter for {name}"
    assert len(letters) == sent
    assert counts["dead_letters"] == sent and counts["messages"] == 3 * sent
