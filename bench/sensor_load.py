"""What the sensor benchmarks feed a node: zigbee2mqtt states of SENSORS smoke and climate sensors, and the node's
YAML. Plain data, no project imports: ``bench/bench_node.py`` imports the project from the checkout it measures."""

from __future__ import annotations

import json
from pathlib import Path

SITE = {"sub_district": "sd", "community": "c", "grid": "g", "site": "bench-court"}
SENSORS = 50
READINGS_PER_MESSAGE = 5
ALARM_TOPIC = "zigbee2mqtt/bench-alarm"
WINDOW = 1_000
"""The broker's and the uplink's in-flight window (``max_inflight``), as the compound broker ships it."""


def topic(i: int, root: str = "zigbee2mqtt") -> str:
    """The state topic of the sensor that sends message ``i`` (round-robin)."""
    return f"{root}/s{i % SENSORS:03d}"


def state(i: int, smoke: bool = False) -> bytes:
    """A zigbee2mqtt smoke and climate sensor's state: five readings."""
    return json.dumps(
        {"smoke": smoke, "temperature": 20 + i % 50 / 10, "humidity": 40 + i % 20, "battery": 87, "linkquality": 120}
    ).encode()


def node_yaml(node_id: str, broker_url: str, spool: Path) -> str:
    sensors = "".join(f"  - {{id: s{i:03d}, adapter: zigbee2mqtt, topic: {topic(i)}}}\n" for i in range(SENSORS))
    place = ", ".join(f"{level}: {name}" for level, name in SITE.items() if level != "site")
    return f"""node_id: {node_id}
site: {{id: {SITE["site"]}, {place}}}
broker: {{url: "{broker_url}", max_inflight: {WINDOW}}}
uplink: {{spool: "{spool}", max_inflight: {WINDOW}}}
sensors:
  - {{id: bench-alarm, adapter: zigbee2mqtt, topic: {ALARM_TOPIC}}}
{sensors}"""
