"""What the fault tests share: a place and sensors, node configs, ``patrolnet ingest`` as a child process,
numbered events and smoke detectors, and the tallies of sent / stored / lost / duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from contextlib import ExitStack
from pathlib import Path
from uuid import UUID

from conftest import eventually, mqtt_client
from fire_helpers import query

from alerts.core.models import Event, EventKind, EventState, Place
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


def tally(label: str, database_url: str, table: str, ids: list[UUID]) -> tuple[int, int]:
    """(lost, duplicated) of ``ids`` in ``table``, counted by id, and printed."""
    rows = query(database_url, f"SELECT id, count(*) FROM {table} WHERE id = ANY(%s) GROUP BY id", (ids,))
    stored = sum(n for _, n in rows)
    lost = len(set(ids) - {id_ for id_, _ in rows})
    duplicated = stored - len(rows)
    print(f"{label}: sent {len(ids)} / stored {stored} / lost {lost} / duplicated {duplicated}")
    return lost, duplicated


class Detectors:
    """Smoke detectors on the node's local broker that alarm and clear in turn, each message numbered (``seq``)."""

    def __init__(self, local: Service, rate: float) -> None:
        self.local = local
        self.rate = rate
        self.sent: dict[str, list[int]] = {s: [] for s in SENSORS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Detectors:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt()

    def halt(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with mqtt_client(self.local, "test-zigbee2mqtt") as client:
            seq = 0
            while not self._stop.wait(1 / self.rate):
                for sensor in SENSORS:
                    payload = {"smoke": seq % 2 == 0, "battery": 90, "seq": seq}
                    client.publish(f"zigbee2mqtt/{sensor}", json.dumps(payload).encode(), qos=1).wait_for_publish(5)
                    self.sent[sensor].append(seq)
                seq += 1

    def count(self) -> int:
        return sum(len(v) for v in self.sent.values())


def stored_seqs(database_url: str) -> list[tuple[str, float]]:
    return query(database_url, "SELECT device, value FROM readings WHERE quantity = 'seq'")


def tally_node_events(label: str, database_url: str) -> int:
    """Waits until the node's spool is empty and every event it spooled (its own count, from its heartbeats) is
    stored; prints sent / stored / lost / duplicated and returns how many camera events were stored. The ids of
    camera events are born in the node, so the node's count stands for what was sent; an id is a primary key,
    so a duplicate cannot be stored, and equal counts mean none was lost."""

    def settled() -> tuple[float, int] | None:
        beats = query(database_url, "SELECT counters FROM nodes WHERE node_id = 'fault-node'")
        if not beats or beats[0][0].get("spool_pending", 1) != 0:
            return None
        spooled = beats[0][0].get("events", 0)
        # The centre's watchdog raises node_offline in the node's name while the uplink is down: not the node's.
        mine = "SELECT count(*) FROM events WHERE source = 'fault-node' AND type <> 'node_offline'"
        stored = query(database_url, mine)[0][0]
        return (spooled, stored) if stored == spooled else None

    spooled, stored = eventually(settled, timeout=90, interval=0.5)
    camera = query(database_url, "SELECT count(*) FROM events WHERE device = 'cam-walkway'")[0][0]
    print(f"{label}: node events (camera {camera}) sent {spooled:.0f} / stored {stored} / lost {spooled - stored:.0f} /"
          " duplicated 0 (the id is the key)")  # fmt: skip
    return camera


def tally_detectors(label: str, database_url: str, detectors: Detectors) -> tuple[int, int, int]:
    """(lost, duplicated, alarm transitions missing) of the detectors' numbered messages."""
    rows = stored_seqs(database_url)
    sent = {(d, float(s)) for d, seqs in detectors.sent.items() for s in seqs}
    lost = len(sent - set(rows))
    duplicated = len(rows) - len(set(rows))
    print(f"{label}: sent {len(sent)} / stored {len(rows)} / lost {lost} / duplicated {duplicated}")
    transitions = query(database_url, "SELECT count(*) FROM events WHERE type = 'smoke' AND state IN ('start', 'end')")[
        0
    ][0]
    print(f"{label}: alarm transitions sent {len(sent)} / stored {transitions}")
    return lost, duplicated, len(sent) - transitions


def event(i: int) -> Event:
    state = EventState.START if i % 2 == 0 else EventState.END
    return Event(kind=EventKind.FIRE, type="smoke", state=state, place=PLACE, source="node-1", attributes={"i": i})
