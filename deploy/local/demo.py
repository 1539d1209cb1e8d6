"""``patrolnet demo``: the whole data path on this machine, on real services.

Starts PostgreSQL, Mosquitto and an RTSP camera looping real footage
(vtest.avi: people on a walkway, a parked van) in a temporary folder, the
central ingest worker and the alert API as their own processes, an edge node
on the example node config with its cameras pointed at that RTSP server, and
simulated fire sensors; prints the page's address, a person to sign in as per
desk (login and password; the admin's TOTP URI too) and an API key per desk for
scripts, and runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psycopg
import yaml

from alerts.auth import Principal, create_key
from alerts.core.models import Role
from alerts.core.settings import wait_for_signal
from alerts.store.database import migrate
from alerts.store.people import PersonIn, add_person
from alerts.store.sites import register
from deploy.local.services import spawn, start_mosquitto, start_postgres, start_rtsp, wait_for_port
from deploy.local.simulator import SensorSimulator
from edge.config import load_config

log = logging.getLogger(__name__)

FOOTAGE = Path(__file__).resolve().parents[2] / ".cache" / "footage" / "vtest.h264"
"""Made by `make setup` from Debian's opencv-doc."""


DESKS = (Role.FIRE, Role.POLICE, Role.OPERATOR, Role.ADMIN)


async def _add_desk_people(database_url: str) -> dict[Role, tuple[str, str, str | None]]:
    """A person per desk: login, a made-up password and, for the admin, the TOTP URI."""
    made = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for role in DESKS:
            login, password = f"demo-{role}", secrets.token_urlsafe(9)
            person = PersonIn(login=login, name=f"Demo {role.title()} Desk", role=role, password=password)
            made[role] = (login, password, (await add_person(conn, person))[1])
    return made


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
        keys = {role: create_key(db.url, Principal(name=f"demo {role} desk", role=role)) for role in DESKS}
        desk_people = asyncio.run(_add_desk_people(db.url))
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
        print(f"\npatrolnet demo: the alert page is http://127.0.0.1:{api_port}/ ; sign in as a desk:")
        for role, (login, password, totp) in desk_people.items():
            print(f"  {role:<9} login {login:<14} password {password}" + (f"  TOTP {totp}" if totp else ""))
        print("API keys for scripts (Authorization: Bearer <key>):")
        for role, key in keys.items():
            print(f"  {role:<9} key {key}")
        print(f"services and logs in {work}; Ctrl-C stops everything\n", flush=True)
        wait_for_signal()
    return 0
