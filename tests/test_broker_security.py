"""Broker security against a real Mosquitto started from deploy/mosquitto-central.conf: credentials, site-bound
ACLs, the ingest share group kept to ingest, TLS, identity bound to the topic in ingest and the store, and the
``patrolnet broker`` command end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from broker_helpers import (
    NOT_AUTHORIZED,
    PASSWORDS,
    PLACE_A,
    PLACE_B,
    SHARE,
    Probe,
    SecureBroker,
    node_probe,
    patrolnet,
    running_secure_broker,
    start_secure_broker,
)
from conftest import REPO, ApiServer, eventually

from alerts.core.models import Alert, EventKind, Heartbeat, NodeStatus, Place, Role, Severity
from alerts.core.protocol import encode, uplink_topic
from alerts.intake.broker_auth import node_client_id
from alerts.intake.writer import SHARE_GROUP, IngestWorker
from deploy.local.services import Service, start_mosquitto_config
from edge.config import parse_config
from edge.node import EdgeNode


@pytest.fixture
def secure_broker() -> Iterator[SecureBroker]:
    with running_secure_broker() as broker:
        yield broker


def test_strangers_are_refused_on_both_listeners_and_nodes_connect_over_tls(secure_broker: SecureBroker) -> None:
    plain, tls = secure_broker.ports[1883], secure_broker.ports[8883]
    for probe in (Probe(plain, None), Probe(plain, "node-a", "wrong"), Probe(plain, "nobody", "x"),
                  Probe(tls, None, cafile=secure_broker.folder / "ca.crt")):  # fmt: skip
        with probe:
            assert probe.connack.is_failure, probe.connack
            assert probe.connack.value in (134, NOT_AUTHORIZED)
    with Probe(tls, "node-a", cafile=secure_broker.folder / "ca.crt", client_id=node_client_id("node-a")) as node:
        assert not node.connack.is_failure
        assert node.publish(uplink_topic(PLACE_A.site, "events"), b"{}") in (0, 16)


def test_a_node_publishes_and_reads_only_its_own_site(secure_broker: SecureBroker) -> None:
    a_commands, b_commands = (f"patrolnet/v1/{p.site}/commands/#" for p in (PLACE_A, PLACE_B))
    with (
        node_probe(secure_broker, "node-a") as a,
        node_probe(secure_broker, "node-b") as b,
        node_probe(secure_broker, "ingest") as ingest,
    ):
        assert ingest.subscribe(SHARE) == 1
        assert b.subscribe(b_commands) == 1
        assert a.subscribe(a_commands) == 1
        for stolen in (b_commands, uplink_topic(PLACE_B.site, "alerts"), SHARE, f"$share/{SHARE_GROUP}/#", "#",
                       "patrolnet/v1/+/+", "$SYS/#", "$CONTROL/dynamic-security/v1/response"):  # fmt: skip
            assert a.subscribe(stolen) == NOT_AUTHORIZED, stolen
        for forged in ("events", "alerts", "heartbeats", "status"):
            assert a.publish(uplink_topic(PLACE_B.site, forged), b"forged") == NOT_AUTHORIZED
        assert a.publish("patrolnet/v1/oak-yard/commands/open-gate", b"forged") == NOT_AUTHORIZED
        assert a.publish(f"patrolnet/v1/{PLACE_A.site}/commands/x", b"own commands are read-only") == NOT_AUTHORIZED
        sent = 20
        for n in range(sent):
            assert a.publish(uplink_topic(PLACE_A.site, "readings"), str(n).encode()) == 0
        # Ingest alone holds the share group although node A tried to join it: every message reaches it.
        eventually(lambda: len(ingest.messages) >= sent)
        time.sleep(0.5)
        print(f"sent {sent} / received by ingest {len(ingest.messages)} / lost {sent - len(ingest.messages)}")
        assert sorted(int(p) for _, p in ingest.messages) == list(range(sent))
        assert {t for t, _ in ingest.messages} == {uplink_topic(PLACE_A.site, "readings")}
        assert b.messages == [] and a.messages == []


def test_a_nodes_retained_status_and_last_will_pass_and_a_forged_will_does_not(secure_broker: SecureBroker) -> None:
    a_status, b_status = uplink_topic(PLACE_A.site, "status"), uplink_topic(PLACE_B.site, "status")
    offline = NodeStatus(node_id="node-a", place=PLACE_A, online=False).model_dump_json().encode()
    online = NodeStatus(node_id="node-a", place=PLACE_A, online=True).model_dump_json().encode()
    with node_probe(secure_broker, "ingest") as ingest:
        assert ingest.subscribe(SHARE) == 1
        for will_topic in (b_status, a_status):
            node = node_probe(secure_broker, "node-a", will=(will_topic, offline)).__enter__()
            assert not node.connack.is_failure
            if will_topic == a_status:
                assert node.publish(a_status, online, retain=True) == 0
            sock = node.client.socket()
            assert sock is not None, "the probe is connected"
            sock.close()  # vanishes without DISCONNECT: the broker sends the will
            node.client.loop_stop()
            time.sleep(1.0)
        eventually(lambda: (a_status, offline) in ingest.messages)
        assert [t for t, _ in ingest.messages] == [a_status, a_status]
    with node_probe(secure_broker, "ingest") as late:
        assert late.subscribe(uplink_topic("+", "status")) == NOT_AUTHORIZED


NODES = {PLACE_A.site: "node-a", PLACE_B.site: "node-b"}


def _alert(place: Place) -> Alert:
    return Alert(kind=EventKind.FIRE, type="smoke", severity=Severity.CRITICAL, place=place.with_device("smoke-1"),
                 source=NODES[place.site], title="Smoke", route=Role.FIRE,
                 dedup_key=f"{place.site}/smoke-1")  # fmt: skip


def _rows(database_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def ingest(secure_broker: SecureBroker, database_url: str) -> Iterator[IngestWorker]:
    worker = IngestWorker(secure_broker.url("ingest"), database_url, name="secure-ingest")
    worker.start()
    assert worker.wait_ready()
    yield worker
    worker.stop()


def test_a_forged_place_on_a_nodes_own_topic_is_dead_lettered_and_never_reaches_the_other_desk(
    secure_broker: SecureBroker, ingest: IngestWorker, database_url: str
) -> None:
    forged = _alert(PLACE_B)
    heartbeat = Heartbeat(node_id="node-b", place=PLACE_B, started_at=forged.ts)
    genuine = _alert(PLACE_A)
    with node_probe(secure_broker, "node-a") as a:
        assert a.publish(uplink_topic(PLACE_A.site, "alerts"), forged.model_dump_json().encode()) == 0
        assert a.publish(uplink_topic(PLACE_A.site, "heartbeats"), heartbeat.model_dump_json().encode()) == 0
        assert a.publish(uplink_topic(PLACE_A.site, "alerts"), genuine.model_dump_json().encode()) == 0
    eventually(lambda: _rows(database_url, "SELECT 1 FROM alerts WHERE id = %s", genuine.id))
    letters = _rows(database_url, "SELECT topic, reason FROM dead_letters ORDER BY ts")
    # Alerts and heartbeats are written by different lanes of ingest: their dead letters in either order.
    assert sorted(topic for topic, _ in letters) == [uplink_topic(PLACE_A.site, c) for c in ("alerts", "heartbeats")]
    assert all("payload place.site 'oak-yard' differs from the topic's site 'willow-court'" in r for _, r in letters)
    assert _rows(database_url, "SELECT id FROM alerts WHERE community = %s", PLACE_B.community) == []
    assert _rows(database_url, "SELECT node_id FROM nodes") == []
    api = ApiServer(database_url)
    with api:
        desk_b = httpx.get(f"{api.url}/api/v1/alerts", headers=api.key("fire", community=PLACE_B.community))
        desk_a = httpx.get(f"{api.url}/api/v1/alerts", headers=api.key("fire", community=PLACE_A.community))
    assert desk_b.status_code == 200 and desk_b.json()["items"] == []
    assert [item["id"] for item in desk_a.json()["items"]] == [str(genuine.id)]


def test_a_copy_from_another_site_cannot_clear_an_alarm(
    secure_broker: SecureBroker, ingest: IngestWorker, database_url: str
) -> None:
    raised = _alert(PLACE_B)
    # Node A's own place and node id: only the alert id is site B's.
    clearing = raised.model_copy(update={"revision": 9, "active": False, "place": PLACE_A, "source": "node-a"})
    with node_probe(secure_broker, "node-b") as b, node_probe(secure_broker, "node-a") as a:
        assert b.publish(uplink_topic(PLACE_B.site, "alerts"), raised.model_dump_json().encode()) == 0
        eventually(lambda: _rows(database_url, "SELECT 1 FROM alerts WHERE id = %s", raised.id))
        assert a.publish(uplink_topic(PLACE_A.site, "alerts"), clearing.model_dump_json().encode()) == 0
        eventually(lambda: _rows(database_url, "SELECT 1 FROM dead_letters"))
    assert _rows(database_url, "SELECT active, revision, site FROM alerts WHERE id = %s", raised.id) == [
        (True, 1, PLACE_B.site)
    ]
    (reason,) = _rows(database_url, "SELECT reason FROM dead_letters")[0]
    assert reason == (
        f"alert {raised.id} was raised by site 'oak-yard'; a copy from site 'willow-court' may not change it"
    )
    assert _rows(database_url, "SELECT change FROM alert_changes WHERE alert_id = %s", raised.id) == [("raised",)]


def test_a_heartbeat_or_status_naming_another_sites_node_is_dead_lettered_and_leaves_that_node_alone(
    secure_broker: SecureBroker, ingest: IngestWorker, database_url: str
) -> None:
    genuine = Heartbeat(node_id="node-b", place=PLACE_B, started_at=datetime.now(UTC), counters={"spool": 1.0})
    online = NodeStatus(node_id="node-b", place=PLACE_B, online=True)
    # On node-a's own topics, with node-a's own place: only the node id is someone else's.
    hijack = Heartbeat(node_id="node-b", place=PLACE_A, started_at=genuine.started_at, counters={"spool": 99.0})
    gone = NodeStatus(node_id="node-b", place=PLACE_A, online=False)
    own = Heartbeat(node_id="node-a", place=PLACE_A, started_at=genuine.started_at)
    with node_probe(secure_broker, "node-b") as b, node_probe(secure_broker, "node-a") as a:
        assert b.publish(uplink_topic(PLACE_B.site, "heartbeats"), encode("heartbeats", genuine)) == 0
        assert b.publish(uplink_topic(PLACE_B.site, "status"), encode("status", online)) == 0
        eventually(lambda: _rows(database_url, "SELECT 1 FROM node_status WHERE node_id = 'node-b'"))
        assert a.publish(uplink_topic(PLACE_A.site, "heartbeats"), encode("heartbeats", hijack)) == 0
        assert a.publish(uplink_topic(PLACE_A.site, "status"), encode("status", gone)) == 0
        assert a.publish(uplink_topic(PLACE_A.site, "heartbeats"), encode("heartbeats", own)) == 0
        eventually(lambda: _rows(database_url, "SELECT 1 FROM nodes WHERE node_id = 'node-a'"))
    nodes = _rows(database_url, "SELECT node_id, site, heartbeat_at, counters FROM nodes ORDER BY node_id")
    assert nodes == [("node-a", PLACE_A.site, own.ts, {}), ("node-b", PLACE_B.site, genuine.ts, {"spool": 1.0})]
    assert _rows(database_url, "SELECT node_id, site, online FROM node_status") == [("node-b", PLACE_B.site, True)]
    letters = _rows(database_url, "SELECT topic, payload, reason FROM dead_letters ORDER BY topic")
    assert [(topic, bytes(payload)) for topic, payload, _ in letters] == [
        (uplink_topic(PLACE_A.site, "heartbeats"), encode("heartbeats", hijack)),
        (uplink_topic(PLACE_A.site, "status"), encode("status", gone)),
    ]
    reason = "node 'node-b' is not registered to site 'willow-court' (patrolnet broker add-node)"
    assert [reason for _, _, reason in letters] == [reason, reason]


ELM_ROW = ("site", "add", "elm-row", "--sub-district", "riverside", "--community", "east-gate", "--grid", "g07")


def test_the_broker_command_adds_rotates_and_removes_a_node_while_the_broker_runs(
    secure_broker: SecureBroker, database_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "elm-row-01.password"
    unregistered = patrolnet(secure_broker, database_url, "add-node", "--site", "elm-row", "--node", "elm-row-01")
    assert unregistered.returncode == 1 and "site 'elm-row' is not registered" in unregistered.stderr
    assert "elm-row-01" not in patrolnet(secure_broker, database_url, "list").stdout.split()
    assert patrolnet(secure_broker, database_url, *ELM_ROW).returncode == 0
    added = patrolnet(secure_broker, database_url, "add-node", "--site", "elm-row", "--node", "elm-row-01",
                       "--password-file", str(secret))  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout == "" and oct(secret.stat().st_mode & 0o777) == "0o600"
    first = secret.read_text().strip()
    assert len(first) >= 40
    topic = uplink_topic("elm-row", "events")
    with node_probe(secure_broker, "elm-row-01", password=first) as node:
        assert not node.connack.is_failure
        assert node.publish(topic, b"{}") in (0, 16)
        assert node.publish(uplink_topic(PLACE_A.site, "events"), b"{}") == NOT_AUTHORIZED
        rotated = patrolnet(secure_broker, database_url, "rotate", "elm-row-01")
        assert rotated.returncode == 0, rotated.stderr
        second = rotated.stdout.strip()
        eventually(lambda: not node.client.is_connected())  # the old password's connection is closed
    with node_probe(secure_broker, "elm-row-01", password=first) as old:
        assert old.connack.is_failure
    assert "elm-row-01" in patrolnet(secure_broker, database_url, "list").stdout.split()
    refused = patrolnet(secure_broker, database_url, "add-node", "--site", "#", "--node", "x")
    assert refused.returncode == 1 and "site '#' must be" in refused.stderr
    # The plugin keeps its changes in its file: a restarted broker still knows the new password.
    secure_broker.service.stop()
    restarted = start_secure_broker(secure_broker.folder, secure_broker.ports)
    secure_broker.service = restarted.service
    with node_probe(secure_broker, "elm-row-01", password=second) as new:
        assert not new.connack.is_failure
        assert new.publish(topic, b"{}") in (0, 16)
    assert _rows(database_url, "SELECT site FROM site_nodes WHERE node_id = 'elm-row-01'") == [("elm-row",)]
    assert patrolnet(secure_broker, database_url, "remove", "elm-row-01").returncode == 0
    assert _rows(database_url, "SELECT site FROM site_nodes WHERE node_id = 'elm-row-01'") == []
    refused = patrolnet(secure_broker, database_url, "remove", "admin")
    assert refused.returncode == 1 and "would lock everybody out" in refused.stderr
    admin_rotated = patrolnet(secure_broker, database_url, "rotate", "admin")
    assert admin_rotated.returncode == 0, admin_rotated.stderr
    assert patrolnet(secure_broker, database_url, "list").returncode == 1
    listed = patrolnet(secure_broker, database_url, "list", admin=admin_rotated.stdout.strip())
    assert listed.returncode == 0 and "elm-row-01" not in listed.stdout.split()
    with node_probe(secure_broker, "elm-row-01", password=second) as gone:
        assert gone.connack.is_failure


def test_the_broker_command_needs_the_admin(secure_broker: SecureBroker, database_url: str) -> None:
    env = {**os.environ, "PATROLNET_BROKER_ADMIN_URL": secure_broker.url("ingest"),
           "PATROLNET_DATABASE_URL": database_url}  # fmt: skip
    cmd = [sys.executable, "-m", "deploy.cli", "broker", "add-node", "--site", PLACE_B.site, "--node", "intruder"]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not allowed to read the plugin's answers" in done.stderr, done.stderr
    wrong = {**env, "PATROLNET_BROKER_ADMIN_URL": secure_broker.url("admin", "wrong")}
    done = subprocess.run(cmd, env=wrong, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "cannot reach the broker's control API: Not authorized" in done.stderr
    with Probe(secure_broker.ports[1883], "intruder", "anything") as intruder:
        assert intruder.connack.is_failure
    assert _rows(database_url, "SELECT 1 FROM site_nodes WHERE node_id = 'intruder'") == []  # rolled back


def test_a_node_cannot_take_over_an_ingest_workers_session(secure_broker: SecureBroker, ingest: IngestWorker) -> None:
    borrowed = Probe(secure_broker.ports[1883], "node-a", client_id="patrolnet-secure-ingest")
    with borrowed:
        assert borrowed.connack.is_failure
    with node_probe(secure_broker, "node-a") as a:
        for _ in range(5):
            assert a.publish(uplink_topic(PLACE_A.site, "readings"), b"[]") == 0
    eventually(lambda: ingest.counts["messages"] == 5)  # the worker kept its session and its share


def test_a_real_edge_node_with_its_new_credentials_reaches_the_centre(
    secure_broker: SecureBroker, ingest: IngestWorker, broker: Service, database_url: str, tmp_path: Path
) -> None:
    assert patrolnet(secure_broker, database_url, *ELM_ROW).returncode == 0
    added = patrolnet(secure_broker, database_url, "add-node", "--site", "elm-row", "--node", "elm-row-01")
    assert added.returncode == 0, added.stderr
    uplink = f"mqtt://elm-row-01:{added.stdout.strip()}@127.0.0.1:{secure_broker.ports[1883]}"
    config = parse_config(f"""
node_id: elm-row-01
site: {{id: elm-row, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker.url}"}}
uplink: {{url: "{uplink}", spool: "{tmp_path / 'outbox.sqlite3'}", heartbeat_s: 0.5}}
sensors: [{{id: smoke-1, adapter: native, topic: patrolnet/sensors/smoke-1}}]
""")  # fmt: skip
    node = EdgeNode(config)
    node.start()
    try:
        assert node.wait_ready()
        eventually(lambda: _rows(database_url, "SELECT node_id, site FROM nodes"), timeout=20)
    finally:
        node.stop()
    assert _rows(database_url, "SELECT node_id, site FROM nodes") == [("elm-row-01", "elm-row")]
    assert _rows(database_url, "SELECT reason FROM dead_letters") == []


def test_a_node_bridged_through_its_compound_broker_has_its_alarm_stored_and_confirmed(
    secure_broker: SecureBroker,
    ingest: IngestWorker,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """The bridge at the end of deploy/mosquitto-compound.conf, uncommented as OPERATIONS.md says: the node publishes
    to its compound broker, which carries the uplink to the centre over TLS with the node's credentials, and the
    centre's confirmations back. The confirmation's MQTT 5 properties (response topic, correlation data) must
    cross the bridge both ways, or the node keeps every message and sends it again for ever."""
    monkeypatch.delenv("PATROLNET_UPLINK_URL", raising=False)
    folder = Path(tempfile.mkdtemp(prefix="patrolnet-compound-"))  # the broker's own user must reach it
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.chmod(folder, 0o755)
    shutil.copy(secure_broker.folder / "ca.crt", folder / "ca.crt")
    shutil.copy(REPO / "deploy" / "compound.acl.example", folder / "compound.acl")
    (folder / "compound.passwd").write_text("")
    filled = {
        "address": f"127.0.0.1:{secure_broker.ports[8883]}",
        "bridge_cafile": str(folder / "ca.crt"),
        "remote_clientid": node_client_id("node-a"),
        "remote_username": "node-a",
        "remote_password": PASSWORDS["node-a"],
    }
    lines = []
    for line in (REPO / "deploy" / "mosquitto-compound.conf").read_text().splitlines():
        words = line.removeprefix("#").split(maxsplit=1)
        bridged = line.startswith("#") and words[:1] and words[0] in {"connection", "bridge_protocol_version",
                  "cleansession", "local_clientid", "topic", *filled}  # fmt: skip
        lines.append(f"{words[0]} {filled.get(words[0], words[1])}" if bridged else line)
    conf = folder / "bridged.conf"
    conf.write_text("\n".join(lines) + "\n")
    ports: dict[int, int] = {}
    with start_mosquitto_config(conf, folder, ports) as compound:
        config = parse_config(f"""
node_id: node-a
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{compound.url}"}}
uplink: {{spool: "{tmp_path / 'outbox.sqlite3'}"}}
sensors: [{{id: smoke-1, adapter: zigbee2mqtt, topic: zigbee2mqtt/hall}}]
""")  # fmt: skip
        node = EdgeNode(config)
        node.start()
        try:
            assert node.wait_ready()
            sensor = Probe(ports[1883], None)
            with sensor:
                sensor.client.publish("zigbee2mqtt/hall", b'{"smoke": true}', qos=1).wait_for_publish(5)
            eventually(lambda: _rows(database_url, "SELECT type, site FROM alerts"), timeout=30)
            assert _rows(database_url, "SELECT type, site FROM alerts") == [("smoke", "willow-court")]
            # Deleted from the spool only once the centre's confirmation came back over the bridge.
            eventually(lambda: node.uplink.spool.pending() == 0, timeout=30)
            assert node.uplink.resent == 0, "nothing was sent twice for want of a confirmation"
        finally:
            node.stop()
    assert _rows(database_url, "SELECT reason FROM dead_letters") == []
