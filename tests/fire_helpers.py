"""Helpers of the fire-path tests: a zigbee2mqtt smoke detector's topic and alarm, a node watching it, a publisher."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from alerts.core.models import Alert, Event
from alerts.core.policy import AlertPolicy
from edge.config import NodeConfig, parse_config

SMOKE_TOPIC = "zigbee2mqtt/b3-stair-smoke"
ALARM = {"smoke": True, "battery": 87, "battery_low": False, "tamper": False, "linkquality": 120}
CLEAR = {**ALARM, "smoke": False}


ONE_SMOKE = f'  - {{id: smoke-b3-stair, adapter: zigbee2mqtt, topic: {SMOKE_TOPIC}, name: "Building 3, stairwell"}}'


def node_config(broker_url: str, spool: Path, sensors: str = ONE_SMOKE) -> NodeConfig:
    """A node of the willow-court test site on ``broker_url`` with ``sensors`` (YAML list items)."""
    return parse_config(
        f"""
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker_url}"}}
uplink: {{spool: "{spool}"}}
sensors:
{sensors}
"""
    )


def publish(client: mqtt.Client, payload: dict | bytes, topic: str = SMOKE_TOPIC) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client.publish(topic, body, qos=1).wait_for_publish(timeout=5)


def query(database_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Every row ``sql`` returns from the test's database."""
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


def alert_of(policy: AlertPolicy, event: Event) -> Alert:
    """The alert the event raises or updates; the test fails if it changes none."""
    alert = policy.apply(event)
    assert alert is not None, f"{event.type} {event.state} changed no alert"
    return alert
