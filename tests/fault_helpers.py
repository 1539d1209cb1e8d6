"""What the fault tests share: a place and sensors, node configs, ``patrolnet ingest`` as a child process."""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from alerts.core.models import Place
from deploy.local.services import Service, spawn

PLACE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")
SENSORS = ("smoke-a", "smoke-b", "smoke-c")


def env(mqtt_url: str, database_url: str, **more: str) -> dict[str, str]:
    return {**os.environ, "PATROLNET_MQTT_URL": mqtt_url, "PATROLNET_DATABASE_URL": database_url, **more}


def ingest(broker: Service, database_url: str, stack: ExitStack, *args: str) -> subprocess.Popen:
    """``patrolnet ingest`` as a child process; its name is the default (ingest-<hostname>) unless given."""
    return spawn(["ingest", *args], env(broker.url, database_url), stack)


CAMERA = """
cameras:
  - id: cam-walkway
    capture: {{url: "{url}"}}
    scene:
      zones: [{{name: walkway, polygon: [[0, 0.33], [1, 0.40], [1, 0.85], [0, 0.45]]}}]
      rules: [{{type: intrusion, zone: walkway}}]
"""
"""A camera on the footage's walkway, where people walk all the time: a steady stream of intrusion events."""


def node_yaml(folder: Path, local: Service, heartbeat_s: float = 1.0, camera: Service | None = None) -> Path:
    """The fault node's config: the three detectors of ``SENSORS`` on ``local``, and ``camera`` if given."""
    sensors = "\n".join(f"  - {{id: {s}, adapter: zigbee2mqtt, topic: zigbee2mqtt/{s}}}" for s in SENSORS)
    cameras = CAMERA.format(url=camera.url) if camera is not None else ""
    path = folder / "node.yaml"
    path.write_text(
        f"""
node_id: fault-node
site: {{id: {PLACE.site}, sub_district: {PLACE.sub_district}, community: {PLACE.community}, grid: {PLACE.grid}}}
broker: {{url: "{local.url}"}}
uplink: {{spool: "{folder / "outbox.sqlite3"}", heartbeat_s: {heartbeat_s}}}
sensors:
{sensors}
{cameras}"""
    )
    return path
