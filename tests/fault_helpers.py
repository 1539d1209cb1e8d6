"""What the fault tests share: a place and sensors, node configs, ``patrolnet ingest`` as a child process."""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from alerts.models import Place
from deploy.local.services import Service, spawn

PLACE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")
SENSORS = ("smoke-a", "smoke-b", "smoke-c")


def env(mqtt_url: str, database_url: str, **more: str) -> dict[str, str]:
    return {**os.environ, "PATROLNET_MQTT_URL": mqtt_url, "PATROLNET_DATABASE_URL": database_url, **more}


def ingest(broker: Service, database_url: str, stack: ExitStack, *args: str) -> subprocess.Popen:
    """``patrolnet ingest`` as a child process; its name is the default (ingest-<hostname>) unless given."""
    return spawn(["ingest", *args], env(broker.url, database_url), stack)


def node_yaml(folder: Path, local: Service, heartbeat_s: float = 1.0) -> Path:
    sensors = "\n".join(f"  - {{id: {s}, adapter: zigbee2mqtt, topic: zigbee2mqtt/{s}}}" for s in SENSORS)
    path = folder / "node.yaml"
    path.write_text(
        f"""
node_id: fault-node
site: {{id: {PLACE.site}, sub_district: {PLACE.sub_district}, community: {PLACE.community}, grid: {PLACE.grid}}}
broker: {{url: "{local.url}"}}
uplink: {{spool: "{folder / "outbox.sqlite3"}", heartbeat_s: {heartbeat_s}}}
sensors:
{sensors}
"""
    )
    return path
