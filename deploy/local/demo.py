"""``patrolnet demo``: the whole data path on this machine, on real services.

Starts PostgreSQL, Mosquitto and an RTSP camera looping real footage
(vtest.avi: people on a walkway, a parked van) in a temporary folder, the
central ingest worker and the alert API as their own processes, an edge node
on the example node config with its cameras pointed at that RTSP server, and
simulated fire sensors; prints the page's address and an API key per desk,
and runs until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import yaml

from alerts.auth import Principal, create_key
from alerts.core.models import Role
from alerts.core.settings import wait_for_signal
from alerts.store.database import migrate
from alerts.store.sites import register
from deploy.local.services import spawn, start_mosquitto, start_postgres, start_rtsp, wait_for_port
from deploy.local.simulator import SensorSimulator
from edge.config import load_config

log = logging.getLogger(__name__)

FOOTAGE = Path(__file__).resolve().parents[2] / ".cache" / "footage" / "vtest.h264"
"""Made by `make setup` from Debian's opencv-doc."""


def run_demo(config: str, api_port: int) -> int:
    node = load_config(config)
    work = Path(tempfile.mkdtemp(prefix="patrolnet-demo-"))
    os.chmod(work, 0o755)
    with ExitStack() as stack:
        db = stack.enter_context(start_postgres(work / "postgres"))
        broker = stack.enter_context(start_mosquitto(work / "mosquitto"))
        camera = stack.enter_context(start_rtsp(FOOTAGE, work / "rtsp"))
        migrate(db.url)
        # What the operator registers before a node reports: its site's place and its node id.
        register(db.url, node.site.place(), node.node_id, name=node.site.name)
        keys = {
            role: create_key(db.url, Principal(name=f"demo {role} desk", role=role))
            for role in (Role.FIRE, Role.POLICE, Role.OPERATOR, Role.ADMIN)
        }
        env = {**os.environ, "PATROLNET_DATABASE_URL": db.url, "PATROLNET_MQTT_URL": broker.url}
        # The example config, with its spool moved into the demo's folder and its cameras onto the demo's.
        node_file = work / "node.yaml"
        data = node.model_dump(mode="json")
        data["uplink"]["spool"] = str(work / "outbox.sqlite3")
        for cam in data["cameras"]:
            cam["capture"]["url"] = camera.url
        node_file.write_text(yaml.safe_dump(data, sort_keys=False))
        spawn(["ingest", "--name", "demo-ingest"], env, stack)
        api = spawn(["api", "--port", str(api_port)], env, stack)
        spawn(["edge", "run", "--config", str(node_file)], env, stack)
        wait_for_port(api_port, 60, api)
        simulator = SensorSimulator(broker.url, node.sensors)
        simulator.start()
        stack.callback(simulator.stop)
        print("\npatrolnet demo: the alert page for each desk (the key travels after '#', never to a server log):")
        for role, key in keys.items():
            print(f"  {role:<9} http://127.0.0.1:{api_port}/#key={key}")
        print(f"services and logs in {work}; Ctrl-C stops everything\n", flush=True)
        wait_for_signal()
    return 0
