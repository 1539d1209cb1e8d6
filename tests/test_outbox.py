"""The edge outbox loses nothing while the uplink is down, even across a node restart, nor while nobody listens;
a message and the state saved with it are on disk together or not at all, whenever the process is killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import REPO, _service_folder, eventually, mqtt_client
from fire_helpers import ALARM, node_config, publish

from alerts.core.models import Event, EventKind, Place, utc_now
from alerts.core.protocol import confirm_topic, uplink_topic
from alerts.intake.writer import IngestWorker
from deploy.local.services import Service, free_port, start_mosquitto, start_mosquitto_config
from edge.node import EdgeNode
from edge.outbox import Spool, Uplink
from edge.state import EdgeState

PLACE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")
CONFIRM = confirm_topic(PLACE.site, "test")


def test_alarm_raised_while_the_uplink_is_down_arrives_after_a_node_restart(
    broker: Service, database_url: str, tmp_path: Path, monkeypatch
) -> None:
    central_port = free_port()
    monkeypatch.setenv("PATROLNET_UPLINK_URL", f"mqtt://127.0.0.1:{central_port}")
    spool = tmp_path / "outbox.sqlite3"
    with mqtt_client(broker, "test-zigbee2mqtt") as sensor:
        node = EdgeNode(node_config(broker.url, spool))
        node.start()
        assert node.wait_ready()
        publish(sensor, ALARM)
        eventually(lambda: node.counts["alerts"] == 1)
        node.stop()
        # readings, the event and the alert: all still on disk, nothing acknowledged.
        assert Spool(spool).pending() == 3

        with start_mosquitto(_service_folder("patrolnet-central-"), port=central_port) as central:
            worker = IngestWorker(central.url, database_url, name="test-ingest")
            worker.start()
            assert worker.wait_ready()
            restarted = EdgeNode(node_config(broker.url, spool))
            restarted.start()
            try:
                eventually(lambda: Spool(spool).pending() == 0)

                def stored() -> list[tuple]:
                    with psycopg.connect(database_url) as conn:
                        return conn.execute("SELECT type, active, site, device FROM alerts").fetchall()

                assert eventually(stored) == [("smoke", True, "willow-court", "smoke-b3-stair")]
            finally:
                restarted.stop()
                worker.stop()


def test_a_message_nobody_subscribed_to_stays_spooled_until_ingest_subscribes(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    """Mosquitto answers PUBACK reason 16 ("no matching subscribers") and drops the message: the outbox keeps it,
    backs off instead of spinning, and delivers it once a worker has subscribed."""
    spool = Spool(tmp_path / "outbox.sqlite3")
    uplink = Uplink(spool, broker.url, client_id="patrolnet-edge-test-uplink", confirm_topic=CONFIRM)
    uplink.start()
    events = [Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1") for _ in range(5)]
    try:
        for e in events:
            uplink.send(uplink_topic(PLACE.site, "events"), e.model_dump_json().encode())
        eventually(lambda: uplink.refused >= len(events))
        time.sleep(4)
        # Backing off 1, 2, 4 s: a few rounds of refusals in these seconds, not thousands.
        assert len(events) <= uplink.refused <= 4 * len(events)
        assert spool.pending() == len(events) and uplink.acked == 0

        worker = IngestWorker(broker.url, database_url, name="test-ingest")
        worker.start()
        try:
            assert worker.wait_ready()
            eventually(lambda: spool.pending() == 0, timeout=40)
            with psycopg.connect(database_url) as conn:
                stored = {row[0] for row in conn.execute("SELECT id FROM events")}
        finally:
            worker.stop()
    finally:
        uplink.stop()
    print(f"refused {uplink.refused} times, then delivered: sent {len(events)} / stored {len(stored)}")
    assert stored == {e.id for e in events}


def test_a_message_paho_refuses_to_publish_does_not_block_the_spool(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "outbox.sqlite3")
    uplink = Uplink(spool, broker.url, client_id="patrolnet-edge-test-uplink", confirm_topic=CONFIRM)
    worker = IngestWorker(broker.url, database_url, name="test-ingest")
    worker.start()
    assert worker.wait_ready()
    alarm = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    try:
        spool.put("patrolnet/v1/willow+court/events", b"{}")  # a wildcard: paho raises ValueError
        spool.put("patrolnet/v1/willow-court/events/#", b"{}")
        uplink.send(uplink_topic(PLACE.site, "events"), alarm.model_dump_json().encode())
        uplink.start()
        eventually(lambda: spool.pending() == 0, timeout=20)
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT id FROM events").fetchall() == [(alarm.id,)]
    finally:
        uplink.stop()
        worker.stop()


def test_the_heartbeat_counts_what_the_broker_kept_back_until_ingest_subscribes(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "outbox.sqlite3"
    with mqtt_client(broker, "test-zigbee2mqtt") as sensor:
        node = EdgeNode(node_config(broker.url, spool))
        node.start()
        try:
            assert node.wait_ready()
            publish(sensor, ALARM)
            refused = eventually(lambda: (beat := node.heartbeat(utc_now())).counters["uplink_refused"] >= 3 and beat)
            assert refused.counters["uplink_acked"] == 0
            worker = IngestWorker(broker.url, database_url, name="test-ingest")
            worker.start()
            try:
                assert worker.wait_ready()
                eventually(lambda: node.uplink.spool.pending() == 0, timeout=40)
                delivered = node.heartbeat(utc_now())
            finally:
                worker.stop()
        finally:
            node.stop()
    print(f"heartbeat: refused {refused.counters['uplink_refused']:.0f} before ingest subscribed; then acked "
          f"{delivered.counters['uplink_acked']:.0f}, refused {delivered.counters['uplink_refused']:.0f}")  # fmt: skip
    assert delivered.counters["uplink_acked"] >= 3 and delivered.counters["uplink_refused"] >= 3


WRITER = """
import sys
from pathlib import Path
from edge.outbox import Spool
from edge.state import EdgeState

spool = Spool(Path(sys.argv[1]))
state = EdgeState(spool)
n = state.load("test").get("counter", {"n": 0})["n"]
while True:
    n += 1
    with spool.transaction():
        spool.put("patrolnet/v1/s/alerts", str(n).encode())
        state.save([("test", "counter", {"n": n})])
    if n % 50 == 0:
        print(n, flush=True)
"""


@pytest.mark.slow
def test_a_message_and_its_state_survive_a_sigkill_together_or_not_at_all(tmp_path: Path) -> None:
    """A writer spools message n and saves counter n in one transaction, and is SIGKILLed at random moments:
    after every kill the spool holds exactly the messages 1..counter, each once."""
    path = tmp_path / "outbox.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(8)
    kills, deadline = 0, time.monotonic() + 120
    while kills < 20 and time.monotonic() < deadline:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE)
        try:
            assert writer.stdout is not None and writer.stdout.readline(), "the writer committed"
            time.sleep(rng.uniform(0.0, 0.2))
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=10)
            assert writer.stdout is not None
            writer.stdout.close()
        kills += 1
        spool = Spool(path)
        counted = EdgeState(spool).load("test")["counter"]["n"]
        spooled = [int(payload) for _, _, payload in spool.after(0, 10_000_000)]
        spool.close()
        lost = set(range(1, counted + 1)) - set(spooled)
        print(f"kill {kills}: sent / stored / lost / duplicated = {counted} / {len(spooled)} / {len(lost)} / "
              f"{len(spooled) - len(set(spooled))}")  # fmt: skip
        assert spooled == list(range(1, counted + 1)), f"spool and state disagree after kill {kills}"
    assert kills >= 10


def test_a_key_changed_several_times_in_one_save_keeps_its_last_change(tmp_path: Path) -> None:
    """The changes of one save are written as their last change a key (two statements for a batch); the state
    left is the one the changes made in turn, whatever the order of sets and deletes."""
    state = EdgeState(Spool(tmp_path / "outbox.sqlite3"))
    state.save([("p", "kept", {"n": 0}), ("p", "gone", {"n": 0}), ("p", "back", {"n": 0})])
    state.save([
        ("p", "kept", {"n": 1}), ("p", "gone", None), ("p", "kept", {"n": 2}),
        ("p", "back", None), ("p", "back", {"n": 3}), ("p", "new", {"n": 4}), ("p", "new", None),
    ])  # fmt: skip
    assert state.load("p") == {"kept": {"n": 2}, "back": {"n": 3}}


def mqtt_message(payload: bytes) -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(topic=confirm_topic("s", "n1").encode())
    message.payload = payload
    return message


def test_a_confirmation_deletes_only_what_it_names_and_survives_any_payload(tmp_path: Path) -> None:
    """The confirmation callback runs on paho's thread: whatever arrives, it returns, and only entries of this
    spool named with ASCII digits are deleted."""
    spool = Spool(tmp_path / "outbox.sqlite3")
    seqs = [spool.put(uplink_topic("s", "events"), b"{}") for _ in range(3)]
    uplink = Uplink(spool, "mqtt://127.0.0.1:1", "test-uplink", confirm_topic=confirm_topic("s", "n1"))
    token = spool.token
    for payload in (b"not json", b'{"ids": 7}', f'{{"ids": ["{token}/\\u00b2", "other/{seqs[0]}"]}}'.encode()):
        uplink._on_confirmation(None, None, mqtt_message(payload))
    assert spool.pending() == 3
    uplink._on_confirmation(None, None, mqtt_message(f'{{"ids": ["{token}/{seqs[1]}"]}}'.encode()))
    assert [seq for seq, _, _ in spool.after(0, 10)] == [seqs[0], seqs[2]]
    assert uplink.confirmed == 1


def test_a_message_over_the_brokers_maximum_packet_size_becomes_a_dead_letter_and_the_alarm_after_it_passes(
    database_url: str, tmp_path: Path
) -> None:
    """Mosquitto disconnects a client that sends a packet over its max_packet_size, and paho does not check the
    CONNACK's Maximum Packet Size: sent again at every reconnect, one such message would hold up every alarm after
    it. The outbox knows the limit from the CONNACK and dead-letters the message instead of sending it."""
    conf = tmp_path / "small-packets.conf"
    conf.write_text("listener 1883\nallow_anonymous true\nmax_packet_size 100000\n")
    with start_mosquitto_config(conf, tmp_path / "broker") as broker:
        spool = Spool(tmp_path / "outbox.sqlite3")
        uplink = Uplink(spool, broker.url, client_id="patrolnet-edge-test-uplink", confirm_topic=CONFIRM)
        worker = IngestWorker(broker.url, database_url, name="test-ingest")
        worker.start()
        assert worker.wait_ready()
        big = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", snapshot=os.urandom(120_000))
        alarm = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
        try:
            uplink.send(uplink_topic(PLACE.site, "events"), big.model_dump_json().encode())
            uplink.send(uplink_topic(PLACE.site, "events"), alarm.model_dump_json().encode())
            uplink.start()
            eventually(lambda: spool.pending() == 0, timeout=20)
            with psycopg.connect(database_url) as conn:
                assert conn.execute("SELECT id FROM events").fetchall() == [(alarm.id,)]
                [(reason, kept)] = conn.execute("SELECT reason, length(payload) FROM dead_letters").fetchall()
        finally:
            uplink.stop()
            worker.stop()
    assert "over the broker's maximum packet size of 100000 bytes" in reason
    assert kept == 50_000, "the dead letter keeps what passes the same broker"
