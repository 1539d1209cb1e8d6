"""A central Mosquitto started from deploy/mosquitto-central.conf with TLS and the dynamic-security plugin, and
a probe client that records what the broker answered: shared by the broker security, deploy and confirmation
tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import REPO, eventually
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from alerts.core.models import Place
from alerts.core.mqtt import Client
from alerts.core.protocol import UPLINK_FILTER
from alerts.intake.broker_auth import BrokerAdmin, node_client_id, write_initial_config
from alerts.intake.writer import SHARE_GROUP
from deploy.local.services import Service, start_mosquitto_config

CENTRAL = REPO / "deploy" / "mosquitto-central.conf"
NOT_AUTHORIZED = 135
SHARE = f"$share/{SHARE_GROUP}/{UPLINK_FILTER}"
PLACE_A = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")
PLACE_B = Place(sub_district="riverside", community="north-bank", grid="g02", site="oak-yard")
PASSWORDS = {"admin": "admin-secret", "ingest": "ingest-secret", "node-a": "a-secret", "node-b": "b-secret"}


@dataclass
class SecureBroker:
    service: Service
    folder: Path
    ports: dict[int, int]

    def url(self, user: str, password: str | None = None) -> str:
        return f"mqtt://{user}:{password or PASSWORDS[user]}@127.0.0.1:{self.ports[1883]}"


def self_signed(folder: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=patrolnet-test", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(folder / "server.key"), "-out", str(folder / "server.crt")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    (folder / "ca.crt").write_bytes((folder / "server.crt").read_bytes())


def start_secure_broker(folder: Path, ports: dict[int, int]) -> SecureBroker:
    return SecureBroker(start_mosquitto_config(CENTRAL, folder, ports), folder, ports)


@contextmanager
def running_secure_broker() -> Iterator[SecureBroker]:
    """The central broker from its shipped config, with TLS, the admin and ingest clients, and nodes ``node-a``
    (site A) and ``node-b`` (site B)."""
    folder = Path(tempfile.mkdtemp(prefix="patrolnet-central-"))
    os.chmod(folder, 0o755)
    self_signed(folder)
    admin, ingest = ("admin", PASSWORDS["admin"]), ("ingest", PASSWORDS["ingest"])
    assert write_initial_config(folder / "dynamic-security.json", admin, ingest)
    broker = start_secure_broker(folder, {})
    try:
        with BrokerAdmin(broker.url("admin")) as control:
            control.add_node(PLACE_A.site, "node-a", PASSWORDS["node-a"])
            control.add_node(PLACE_B.site, "node-b", PASSWORDS["node-b"])
        yield broker
    finally:
        broker.service.stop()


class Probe:
    """An MQTT v5 client (the project's, ``alerts.core.mqtt.Client``) that records what the broker answers:
    CONNACK, SUBACKs, PUBACKs, messages."""

    def __init__(self, port: int, user: str | None, password: str | None = None, *, cafile: Path | None = None,
                 will: tuple[str, bytes] | None = None, client_id: str | None = None) -> None:  # fmt: skip
        client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else PASSWORDS[user])
        if cafile is not None:
            self.client.tls_set(ca_certs=str(cafile))
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._connack: ReasonCode | None = None
        self.acks: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._answered = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._ack(mid, list(codes))
        self.client.on_publish = lambda c, u, mid, code, p: self._ack(mid, [code])
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.port = port

    def __enter__(self) -> Probe:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        eventually(lambda: self._connack is not None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode, p: object) -> None:
        self._connack = code

    @property
    def connack(self) -> ReasonCode:
        """The CONNACK's reason code: there is one once the probe is entered."""
        assert self._connack is not None, "the broker has not answered the CONNECT"
        return self._connack

    def _ack(self, mid: int, codes: list[ReasonCode]) -> None:
        with self._answered:
            self.acks[mid] = codes
            self._answered.notify_all()

    def _wait(self, mid: int) -> int:
        with self._answered:
            assert self._answered.wait_for(lambda: mid in self.acks, timeout=10), f"no answer to message {mid}"
            return self.acks[mid][0].value

    def subscribe(self, topic: str) -> int:
        """The SUBACK's reason code: 1 (granted QoS 1) or a refusal."""
        result, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None, f"SUBSCRIBE not sent: {result}"
        return self._wait(mid)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """The PUBACK's reason code."""
        return self._wait(self.client.publish(topic, payload, qos=1, retain=retain).mid)


def node_probe(
    broker: SecureBroker, user: str, password: str | None = None, will: tuple[str, bytes] | None = None
) -> Probe:
    """A client of ``user`` on the plain listener; a node's with the client id its username is bound to."""
    client_id = None if user in ("admin", "ingest") else node_client_id(user)
    return Probe(broker.ports[1883], user, password, will=will, client_id=client_id)


MONITOR_ROLE = "test-uplink-monitor"


def secure_central(nodes: dict[str, str], monitor: bool = False) -> SecureBroker:
    """A central broker from the shipped config, with the ``nodes`` (node -> site) added, each with the password
    ``<node>-secret``; and with ``monitor`` a client ``monitor`` (password ``monitor-secret``) that may read the
    whole uplink outside the ingest share group. Restartable: ``service.start()`` after ``service.kill()``."""
    folder = Path(tempfile.mkdtemp(prefix="patrolnet-central-"))
    os.chmod(folder, 0o755)
    self_signed(folder)
    assert write_initial_config(folder / "dynamic-security.json", ("admin", PASSWORDS["admin"]),
                                ("ingest", PASSWORDS["ingest"]))  # fmt: skip
    broker = start_secure_broker(folder, {})
    assert broker.service.proc is not None
    broker.service.start_cmd = list(broker.service.proc.args)  # type: ignore[arg-type]
    with BrokerAdmin(broker.url("admin")) as control:
        for node, site in nodes.items():
            control.add_node(site, node, f"{node}-secret")
        if monitor:
            acls = [{"acltype": kind, "topic": UPLINK_FILTER, "priority": 0, "allow": True}
                    for kind in ("subscribePattern", "publishClientReceive")]  # fmt: skip
            control.run([{"command": "createRole", "rolename": MONITOR_ROLE, "acls": acls}])
            control.add_client("monitor", "monitor-secret", MONITOR_ROLE, "a dashboard reading the uplink")
    return broker


def patrolnet(
    broker: SecureBroker, database_url: str, *args: str, admin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``patrolnet broker <args>`` (``patrolnet site ...`` when ``args`` start with ``site``) as the operator runs
    it, with the broker's admin URL and the database's."""
    env = {**os.environ, "PATROLNET_BROKER_ADMIN_URL": broker.url("admin", admin),
           "PATROLNET_DATABASE_URL": database_url}  # fmt: skip
    cmd = [sys.executable, "-m", "deploy.cli", *(args if args[0] == "site" else ("broker", *args))]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
