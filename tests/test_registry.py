"""The site registry against a real Mosquitto (the shipped central config, dynamic security) and PostgreSQL: a
node's credential cannot move an alarm to another community's desk, nor speak for another site's node, before
or after that node first reports; the operator's commands and the admin API that register sites and nodes;
ingest's cached copy; and readings that are not numbers, refused at the node and at ingest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from broker_helpers import PLACE_A, SecureBroker, node_probe, patrolnet, running_secure_broker
from conftest import ApiServer, SseReader, edge_and_ingest, eventually, mqtt_client
from fire_helpers import node_config, publish, query

from alerts.core.models import Alert, DeviceStatus, EventKind, Heartbeat, NodeStatus, Place, Reading, Role, Severity
from alerts.core.protocol import encode, uplink_topic
from alerts.intake.writer import MAX_PAYLOAD_BYTES, IngestWorker, add_message
from alerts.store.database import WriteBatch, write_batch
from alerts.store.sites import SiteRegistry, register
from deploy.local.services import Service

PINE = Place(sub_district="lakeside", community="west-lake", grid="g02", site="pine-yard")
WEST_LAKE_FIRE = {"community": PINE.community}


@pytest.fixture
def secure_broker() -> Iterator[SecureBroker]:
    with running_secure_broker() as broker:
        yield broker


@pytest.fixture
def ingest(secure_broker: SecureBroker, database_url: str) -> Iterator[IngestWorker]:
    worker = IngestWorker(secure_broker.url("ingest"), database_url, name="registry-ingest")
    worker.start()
    assert worker.wait_ready()
    yield worker
    worker.stop()


def smoke(place: Place, source: str = "node-a") -> Alert:
    return Alert(kind=EventKind.FIRE, type="smoke", severity=Severity.CRITICAL, place=place.with_device("smoke-1"),
                 source=source, title="Smoke", route=Role.FIRE, dedup_key=f"{place.site}/smoke-1")  # fmt: skip


def letters(database_url: str) -> list[tuple[str, str]]:
    return query(database_url, "SELECT topic, reason FROM dead_letters ORDER BY ts")


def test_a_nodes_credential_cannot_raise_an_alarm_on_another_communitys_desk(
    secure_broker: SecureBroker, ingest: IngestWorker, api: ApiServer, database_url: str
) -> None:
    register(database_url, PINE)
    # Node A's own topic and site; only the levels a desk is scoped by are west-lake's.
    forged = {
        "sub_district, community, grid": PLACE_A.model_copy(update=PINE.model_dump(exclude={"site", "device"})),
        "community": PLACE_A.model_copy(update={"community": PINE.community}),
        "grid": PLACE_A.model_copy(update={"grid": "g02"}),
        "sub_district": PLACE_A.model_copy(update={"sub_district": PINE.sub_district}),
    }
    genuine = smoke(PLACE_A)
    west_list = {"Authorization": api.key("fire", **WEST_LAKE_FIRE)["Authorization"]}
    with (
        SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire", **WEST_LAKE_FIRE)) as west,
        SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire", sub_district=PINE.sub_district)) as lakeside,
        SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire", community=PLACE_A.community)) as east,
        node_probe(secure_broker, "node-a") as a,
    ):
        for place in forged.values():
            assert a.publish(uplink_topic(PLACE_A.site, "alerts"), encode("alerts", smoke(place))) == 0
        reading = Reading(place=forged["community"].with_device("heat-1"), quantity="temperature", value=80.0)
        assert a.publish(uplink_topic(PLACE_A.site, "readings"), encode("readings", [reading])) == 0
        assert a.publish(uplink_topic(PLACE_A.site, "alerts"), encode("alerts", genuine)) == 0
        _, change, alert = east.next(timeout=15)  # the stream is live: node A's own alarm reaches its own desk
        assert (change, alert["id"]) == ("raised", str(genuine.id))
        assert west.drain(1.0) == [] and lakeside.drain(0.1) == []
        listed = httpx.get(f"{api.url}/api/v1/alerts", headers=west_list)
    assert listed.status_code == 200 and listed.json()["items"] == []
    got = letters(database_url)
    print(f"forged places sent {len(forged) + 1} / dead letters {len(got)} / reached west-lake's desk 0")
    # Alerts and readings are written by different lanes of ingest: each lane's dead letters in order, the two mixed.
    alert_reasons = [reason for topic, reason in got if topic == uplink_topic(PLACE_A.site, "alerts")]
    assert len(alert_reasons) == 4 and len(got) == 5
    assert [topic for topic, _ in got if topic != uplink_topic(PLACE_A.site, "alerts")] == [
        uplink_topic(PLACE_A.site, "readings")
    ]
    for (level, place), reason in zip(forged.items(), alert_reasons, strict=True):
        first = level.split(", ")[0]
        assert reason == (f"payload place.{first} {getattr(place, first)!r} differs from site 'willow-court''s "
                          f"registered {first} {getattr(PLACE_A, first)!r}")  # fmt: skip
    assert query(database_url, "SELECT id, community FROM alerts") == [(genuine.id, PLACE_A.community)]
    assert query(database_url, "SELECT count(*) FROM readings") == [(0,)]


def _beat(place: Place, node: str, camera: str, spool: float) -> Heartbeat:
    camera_status = DeviceStatus(device=camera, type="camera", online=True)
    return Heartbeat(node_id=node, place=place, started_at=datetime.now(UTC), devices=[camera_status],
                     counters={"spool": spool})  # fmt: skip


def test_a_node_id_of_another_site_is_refused_before_and_after_that_node_first_reports(
    secure_broker: SecureBroker, ingest: IngestWorker, api: ApiServer, database_url: str
) -> None:
    levels = ("--sub-district", PINE.sub_district, "--community", PINE.community, "--grid", PINE.grid)
    assert patrolnet(secure_broker, database_url, "site", "add", PINE.site, *levels).returncode == 0
    a_topic = {channel: uplink_topic(PLACE_A.site, channel) for channel in ("heartbeats", "status")}
    claims = [
        (a_topic["heartbeats"], encode("heartbeats", _beat(PLACE_A, "pine-yard-02", "fake-cam", 99.0))),
        (a_topic["status"], encode("status", NodeStatus(node_id="pine-yard-02", place=PLACE_A, online=True))),
    ]
    with node_probe(secure_broker, "node-a") as a:
        for topic, payload in claims:  # before pine-yard-02 is registered or has reported
            assert a.publish(topic, payload) == 0
        assert a.publish(uplink_topic(PINE.site, "heartbeats"), claims[0][1]) == 135  # the broker: not its site
    eventually(lambda: len(letters(database_url)) == 2)
    # What the store held before the registry: node A's claim, stored as pine-yard-02 of site willow-court.
    with psycopg.connect(database_url) as conn:
        write_batch(conn, WriteBatch(heartbeats=[_beat(PLACE_A, "pine-yard-02", "fake-cam", 99.0)]))
    added = patrolnet(secure_broker, database_url, "add-node", "--site", PINE.site, "--node", "pine-yard-02")
    assert added.returncode == 0, added.stderr
    assert query(database_url, "SELECT node_id FROM nodes WHERE node_id = 'pine-yard-02'") == []  # given back
    real = _beat(PINE, "pine-yard-02", "gate-cam", 1.0)
    with node_probe(secure_broker, "pine-yard-02", password=added.stdout.strip()) as pine:
        assert pine.publish(uplink_topic(PINE.site, "heartbeats"), encode("heartbeats", real)) == 0
        online = NodeStatus(node_id="pine-yard-02", place=PINE, online=True)
        assert pine.publish(uplink_topic(PINE.site, "status"), encode("status", online)) == 0
    eventually(lambda: query(database_url, "SELECT 1 FROM node_status WHERE node_id = 'pine-yard-02'"))
    with node_probe(secure_broker, "node-a") as a:  # after pine-yard-02 first reported
        assert a.publish(a_topic["heartbeats"], encode("heartbeats", _beat(PLACE_A, "pine-yard-02", "fake", 7.0))) == 0
        gone = NodeStatus(node_id="pine-yard-02", place=PLACE_A, online=False)
        assert a.publish(a_topic["status"], encode("status", gone)) == 0
    eventually(lambda: len(letters(database_url)) == 4)
    reason = "node 'pine-yard-02' is not registered to site 'willow-court' (patrolnet broker add-node)"
    assert [r for _, r in letters(database_url)] == [reason] * 4
    assert query(database_url, "SELECT node_id, site, counters FROM nodes") == [
        ("pine-yard-02", PINE.site, {"spool": 1.0})
    ]
    assert query(database_url, "SELECT site, online FROM node_status") == [(PINE.site, True)]
    assert query(database_url, "SELECT site, device FROM devices WHERE node_id = 'pine-yard-02'") == [
        (PINE.site, "gate-cam")
    ]
    [node] = httpx.get(f"{api.url}/api/v1/nodes", headers=api.key("operator")).json()
    assert (node["node_id"], node["healthy"], node["online"]) == ("pine-yard-02", True, True)
    assert node["place"] == PINE.model_dump(exclude={"device"})


def test_sites_registered_or_changed_after_a_worker_read_the_registry(broker: Service, database_url: str) -> None:
    birch = Place(sub_district="riverside", community="east-gate", grid="g08", site="birch-lane")
    worker = IngestWorker(broker.url, database_url, name="registry-cache")
    worker.start()
    assert worker.wait_ready()
    try:
        with mqtt_client(broker, "birch-lane-01") as node:
            beat = encode("heartbeats", _beat(birch, "birch-lane-01", "cam", 1.0))
            node.publish(uplink_topic(birch.site, "heartbeats"), beat, qos=1).wait_for_publish(5)
            eventually(lambda: letters(database_url))
            register(database_url, birch, "birch-lane-01")  # within the worker's 5 s: read again on the miss
            node.publish(uplink_topic(birch.site, "heartbeats"), beat, qos=1).wait_for_publish(5)
            eventually(lambda: query(database_url, "SELECT site FROM nodes") == [(birch.site,)])
    finally:
        worker.stop()
    assert [r for _, r in letters(database_url)] == ["site 'birch-lane' is not registered (patrolnet site add)"]


def test_the_cached_registry_reads_on_age_and_before_refusing_only(database_url: str) -> None:
    registry = SiteRegistry(database_url, max_age_s=0.5)

    def place_of(site: str) -> Place | None:
        found = registry.get(site)
        return None if found is None else found.place

    assert place_of(PLACE_A.site) == PLACE_A and registry.reads == 1
    assert registry.get("nowhere", fresh=True, arrived_at=0.0) is None and registry.reads == 1  # arrived before
    assert registry.get("nowhere", fresh=True) is None and registry.reads == 2
    moved = PLACE_A.model_copy(update={"grid": "g09"})
    register(database_url, moved)
    assert place_of(PLACE_A.site) == PLACE_A  # a few seconds old at most ...
    eventually(lambda: place_of(PLACE_A.site) == moved)  # ... then read again
    registry.close()
    away = SiteRegistry("postgresql://nobody@127.0.0.1:1/none")
    batch = WriteBatch()
    status = encode("status", NodeStatus(node_id="node-a", place=PLACE_A, online=True))
    with pytest.raises(psycopg.OperationalError):
        add_message(uplink_topic(PLACE_A.site, "status"), status, batch, "w", away.get)
    assert len(batch) == 0, "a message the registry could not check is neither stored nor refused"


def test_the_site_commands_and_the_admin_route_register_places(
    secure_broker: SecureBroker, api: ApiServer, database_url: str
) -> None:
    bad = patrolnet(secure_broker, database_url, "site", "add", "a/b", "--sub-district", "s", "--community", "c",
                    "--grid", "g")  # fmt: skip
    assert bad.returncode == 1 and "site: String should match pattern" in bad.stderr
    listed = patrolnet(secure_broker, database_url, "site", "list").stdout
    assert "willow-court" in listed and "node-a" in listed
    admin = api.key("admin")
    body = {"site": "pine-yard", **PINE.model_dump(exclude={"site", "device"}), "name": "Pine Yard"}
    created = httpx.post(f"{api.url}/api/v1/sites", json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json() == {**body, "nodes": []}
    changed = httpx.post(f"{api.url}/api/v1/sites", json={**body, "grid": "g03"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["grid"] == "g03"
    assert httpx.post(f"{api.url}/api/v1/sites", json=body, headers=api.key("fire")).status_code == 403
    east_admin = api.key("admin", community="east-gate")
    outside = httpx.post(f"{api.url}/api/v1/sites", json={**body, "community": "east-gate"}, headers=east_admin)
    assert outside.status_code == 403 and "registered outside" in outside.json()["detail"]
    for wrong in ({**body, "site": "pine/yard"}, {**body, "grid": ""}, {**body, "owner": "x"}):
        answer = httpx.post(f"{api.url}/api/v1/sites", json=wrong, headers=admin)
        assert answer.status_code == 422 and answer.json()["detail"], answer.text
    listed_api = httpx.get(f"{api.url}/api/v1/sites", headers=east_admin).json()
    assert [s["site"] for s in listed_api] == ["poison-court", "willow-court"]
    assert httpx.delete(f"{api.url}/api/v1/sites/pine-yard", headers=east_admin).status_code == 404
    assert httpx.delete(f"{api.url}/api/v1/sites/pine-yard", headers=admin).status_code == 204
    removed = patrolnet(secure_broker, database_url, "site", "remove", "willow-court")
    assert removed.returncode == 0
    assert query(database_url, "SELECT site FROM sites ORDER BY site") == [("oak-yard",), ("poison-court",)]
    assert query(database_url, "SELECT 1 FROM site_nodes WHERE node_id = 'node-a'") == []


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_reading_that_is_not_a_number_is_a_dead_letter_at_ingest(
    value: str, broker: Service, database_url: str
) -> None:
    good = Reading(place=PLACE_A.with_device("heat-1"), quantity="temperature", value=21.5)
    bad = encode("readings", [good]).replace(b'"value":21.5', f'"value":{value}'.encode())
    worker = IngestWorker(broker.url, database_url, name="nan-ingest")
    worker.start()
    assert worker.wait_ready()
    try:
        with mqtt_client(broker, "nan-node") as node:
            for payload in (bad, encode("readings", [good])):
                node.publish(uplink_topic(PLACE_A.site, "readings"), payload, qos=1).wait_for_publish(5)
            eventually(lambda: query(database_url, "SELECT value FROM readings"))
    finally:
        worker.stop()
    assert query(database_url, "SELECT value FROM readings") == [(21.5,)]
    [(_, reason)] = letters(database_url)
    assert reason.startswith("readings: unreadable") and "value: Input should be a finite number" in reason


def test_a_sensor_value_that_is_not_a_number_is_refused_at_the_node(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    heat = "  - {id: heat-1, adapter: zigbee2mqtt, topic: zigbee2mqtt/heat-1}"
    config = node_config(broker.url, tmp_path / "outbox.sqlite3", heat)
    with edge_and_ingest(config, broker, database_url), mqtt_client(broker, "test-zigbee2mqtt") as sensor:
        for value in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"21.5"):
            publish(sensor, b'{"temperature": ' + value + b"}", topic="zigbee2mqtt/heat-1")
        eventually(lambda: query(database_url, "SELECT value FROM readings"), timeout=15)
        eventually(lambda: len(query(database_url, "SELECT 1 FROM dead_letters")) >= 4)
    assert query(database_url, "SELECT value FROM readings") == [(21.5,)]
    reasons = [r for (r,) in query(database_url, "SELECT reason FROM dead_letters WHERE source = 'test-node'")]
    assert len(reasons) == 4 and all("temperature: expected a finite number" in r for r in reasons), reasons


def test_the_central_brokers_packet_limit_leaves_ingests_cap_to_ingest(
    secure_broker: SecureBroker, ingest: IngestWorker, database_url: str
) -> None:
    topic = uplink_topic(PLACE_A.site, "events")
    with node_probe(secure_broker, "node-a") as a:
        assert a.publish(topic, b"x" * (MAX_PAYLOAD_BYTES + 1)) == 0  # over ingest's cap, within the broker's
        a.client.publish(topic, b"x" * 8 * 1024 * 1024, qos=1)  # with its topic, over max_packet_size
        eventually(lambda: not a.client.is_connected())
    eventually(lambda: ingest.counts["messages"] == 1)
    assert [reason for _, reason in letters(database_url)] == [
        f"payload of {MAX_PAYLOAD_BYTES + 1} bytes is over the cap of {MAX_PAYLOAD_BYTES} bytes"
    ]
    log = (secure_broker.folder / "mosquitto.log").read_text()
    assert "disconnected due to oversize packet" in log
