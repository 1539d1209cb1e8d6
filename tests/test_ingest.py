"""Ingest on a real broker and database: ack after commit survives a killed worker; duplicates are one row;
a broken store ends the process without acknowledging; an alarm is stored while readings are held up."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import REPO, eventually, mqtt_client

from alerts.core.models import DeviceStatus, Event, EventKind, Heartbeat, Place, Reading
from alerts.core.policy import AlertPolicy
from alerts.core.protocol import encode, uplink_topic
from alerts.intake.writer import IngestWorker
from alerts.store.database import WriteBatch
from deploy.local.services import Service

PLACE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")


@pytest.fixture
def publisher(broker: Service) -> Iterator[mqtt.Client]:
    with mqtt_client(broker, "test-edge-uplink") as client:
        yield client


def publish(client: mqtt.Client, channel: str, payload: bytes) -> None:
    client.publish(uplink_topic(PLACE.site, channel), payload, qos=1).wait_for_publish(timeout=5)


def start_worker(broker: Service, database_url: str, name: str) -> subprocess.Popen:
    env = {**os.environ, "PATROLNET_DATABASE_URL": database_url, "PATROLNET_MQTT_URL": broker.url}
    return subprocess.Popen([sys.executable, "-m", "deploy.cli", "ingest", "--name", name], cwd=REPO, env=env)


def rows(database_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql).fetchall()


def heartbeat() -> bytes:
    beat = Heartbeat(
        node_id="node-1",
        place=PLACE.model_copy(update={"device": None}),
        started_at=datetime.now(UTC),
        devices=[DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True)],
    )
    return beat.model_dump_json().encode()


def heartbeats_stored(publisher: mqtt.Client, database_url: str, timeout: float) -> None:
    """Publishes heartbeats until one is stored: proof that the worker is subscribed and writing."""

    def beat_stored() -> list[tuple]:
        publish(publisher, "heartbeats", heartbeat())
        return rows(database_url, "SELECT node_id FROM nodes")

    eventually(beat_stored, timeout=timeout, interval=0.3)


@pytest.mark.parametrize("channel", ["alerts", "events"])
def test_a_worker_killed_in_its_transaction_loses_nothing_and_the_redelivery_lands_once(
    broker: Service, database_url: str, publisher: mqtt.Client, channel: str
) -> None:
    """Killed while the database holds its transaction back (a lock). An alert's is held at its first read, before
    the worker sent COMMIT: nothing is stored. An event's went whole, COMMIT included (one round trip: the
    worker's ``_pipelined``), so the database may store it after the worker died, unacknowledged. Either way the
    broker sends the message again, and it is stored once."""
    worker = start_worker(broker, database_url, "kill-test")
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1")
    alert = AlertPolicy().apply(event)
    assert alert is not None
    sent, sent_id = (alert, alert.id) if channel == "alerts" else (event, event.id)
    try:
        heartbeats_stored(publisher, database_url, timeout=20)
        with psycopg.connect(database_url) as lock:
            lock.execute(f"LOCK TABLE {channel} IN ACCESS EXCLUSIVE MODE")
            publish(publisher, channel, sent.model_dump_json().encode())
            eventually(
                lambda: rows(
                    database_url,
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
            )
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            lock.rollback()
        time.sleep(0.3)
        if channel == "alerts":
            assert rows(database_url, "SELECT count(*) FROM alerts") == [(0,)]
    finally:
        if worker.poll() is None:
            worker.kill()

    # The same worker name is the same persistent MQTT session: the broker delivers the message again.
    restarted_at = rows(database_url, "SELECT now()")[0][0]
    worker = start_worker(broker, database_url, "kill-test")
    try:
        eventually(lambda: rows(database_url, f"SELECT id FROM {channel}"), timeout=20)
        publish(publisher, channel, sent.model_dump_json().encode())  # and the edge resends it too

        def beat_after_restart() -> bool:
            publish(publisher, "heartbeats", heartbeat())
            with psycopg.connect(database_url) as conn:
                return bool(conn.execute("SELECT 1 FROM nodes WHERE received_at > %s", (restarted_at,)).fetchall())

        eventually(beat_after_restart, timeout=20, interval=0.3)
        assert rows(database_url, f"SELECT id FROM {channel}") == [(sent_id,)]
        assert rows(database_url, "SELECT count(*) FROM dead_letters") == [(0,)]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def test_a_store_that_refuses_even_a_dead_letter_ends_the_process_and_the_message_waits(
    broker: Service, database_url: str, publisher: mqtt.Client
) -> None:
    worker = start_worker(broker, database_url, "broken-store")
    try:
        heartbeats_stored(publisher, database_url, timeout=60)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE dead_letters RENAME TO dead_letters_away")
        publish(publisher, "events", b"{not json")
        # The writer thread stops; the process notices and exits non-zero for its service manager.
        assert worker.wait(timeout=30) == 1
    finally:
        if worker.poll() is None:
            worker.kill()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE dead_letters_away RENAME TO dead_letters")
    worker = start_worker(broker, database_url, "broken-store")
    try:
        # Not acknowledged before: the broker delivers it again, and now its dead letter is stored.
        letters = eventually(lambda: rows(database_url, "SELECT payload, reason FROM dead_letters"), timeout=60)
        assert [bytes(p) for p, _ in letters] == [b"{not json"] and "Invalid JSON" in letters[0][1]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def test_an_alarm_is_stored_while_a_batch_of_readings_waits_for_the_database(
    broker: Service, database_url: str, publisher: mqtt.Client
) -> None:
    worker = start_worker(broker, database_url, "lane-test")
    try:
        heartbeats_stored(publisher, database_url, timeout=30)
        readings = [Reading(place=PLACE, quantity="temperature", value=20 + i / 100) for i in range(300)]
        event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1")
        alert = AlertPolicy().apply(event)
        assert alert is not None
        with psycopg.connect(database_url) as lock:
            # The readings' lane blocks inside its transaction, as behind a slow COPY of thousands of rows.
            lock.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            publish(publisher, "readings", encode("readings", readings))
            publish(publisher, "events", event.model_dump_json().encode())
            publish(publisher, "alerts", alert.model_dump_json().encode())
            stored = eventually(lambda: rows(database_url, "SELECT id FROM alerts"), timeout=30)
            assert stored == [(alert.id,)] and rows(database_url, "SELECT id FROM events") == [(event.id,)]
            assert lock.execute("SELECT count(*) FROM readings").fetchone() == (0,), "the readings still wait"
            lock.rollback()
        eventually(lambda: rows(database_url, "SELECT count(*) FROM readings") == [(300,)], timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


def _waits(worker: IngestWorker, batch: WriteBatch, trace: Path) -> int:
    """Commits ``batch`` through the worker's own transaction; how many times it waited for the database: in
    libpq's trace of the connection, each turn from what the worker sent (F) to what the server answered (B)."""
    assert worker._conn is not None
    with trace.open("w") as out:
        worker._conn.pgconn.trace(out.fileno())
        try:
            worker._commit(batch)
        finally:
            if worker._conn is not None:
                worker._conn.pgconn.untrace()
    # A statement's text may run over several lines: only a message's first line has the side in its second field.
    fields = [line.split("\t") for line in trace.read_text().splitlines()]
    sides = [parts[1] for parts in fields if len(parts) > 1 and parts[1] in ("F", "B")]
    return sum(1 for sent, answered in itertools.pairwise(sides) if (sent, answered) == ("F", "B"))


def test_an_alarms_transaction_waits_once_or_twice_and_one_that_fails_leaves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """An alarm's event commits in one wait for the database, its alert in two (who owns its id, read with its
    upsert; then the commit): psycopg's transaction() in pipeline mode took four and six. BEGIN and COMMIT sent by
    hand must still be all or nothing, whether the database or psycopg refuses a row."""
    worker = IngestWorker("mqtt://127.0.0.1:1", database_url, name="round-trips")  # never connected: no broker
    policy = AlertPolicy()
    worker._commit(WriteBatch(events=[Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1")]))
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1")
    alert = policy.apply(event)
    assert alert is not None
    assert _waits(worker, WriteBatch(events=[event]), tmp_path / "event.trace") == 1
    assert _waits(worker, WriteBatch(alerts=[alert]), tmp_path / "alert.trace") == 2
    assert rows(database_url, f"SELECT count(*) FROM events WHERE id = '{event.id}'") == [(1,)]
    assert rows(database_url, f"SELECT count(*) FROM alerts WHERE id = '{alert.id}'") == [(1,)]

    # The database refuses the second event (a trigger, as a constraint would) after the first was inserted.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN IF NEW.title = 'refused' THEN RAISE EXCEPTION 'refused by a test'; END IF; RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()")
    first = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1", title="first")
    refused = first.model_copy(update={"id": uuid4(), "title": "refused"})
    psycopg_refuses = first.model_copy(update={"id": uuid4(), "title": "nul\x00byte"})
    for bad in (refused, psycopg_refuses):
        with pytest.raises(psycopg.Error):
            worker._commit(WriteBatch(events=[first, bad]))
        assert rows(database_url, "SELECT count(*) FROM events WHERE title = 'first'") == [(0,)]
    worker._commit(WriteBatch(events=[first]))  # the next write has a working connection
    assert rows(database_url, "SELECT count(*) FROM events WHERE title = 'first'") == [(1,)]
