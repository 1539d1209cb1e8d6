"""Ingest on a real broker and database: ack after commit survives a killed worker; duplicates are one row;
a broken store ends the process without acknowledging; an alarm is stored while readings are held up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import REPO, eventually, mqtt_client

from alerts.core.models import DeviceStatus, Event, EventKind, Heartbeat, Place, Reading
from alerts.core.policy import AlertPolicy
from alerts.core.protocol import encode, uplink_topic
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


def test_a_worker_killed_before_its_commit_loses_nothing_and_the_redelivery_lands_once(
    broker: Service, database_url: str, publisher: mqtt.Client
) -> None:
    worker = start_worker(broker, database_url, "kill-test")
    try:
        heartbeats_stored(publisher, database_url, timeout=20)

        event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="node-1")
        with psycopg.connect(database_url) as lock:
            # Hold the table so the worker's transaction blocks between receipt and commit.
            lock.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            publish(publisher, "events", event.model_dump_json().encode())
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
        assert rows(database_url, "SELECT count(*) FROM events") == [(0,)]
    finally:
        if worker.poll() is None:
            worker.kill()

    # The same worker name is the same persistent MQTT session: the broker delivers the message again.
    worker = start_worker(broker, database_url, "kill-test")
    try:
        eventually(lambda: rows(database_url, "SELECT id FROM events"), timeout=20)
        publish(publisher, "events", event.model_dump_json().encode())  # and the edge resends it too
        publish(publisher, "heartbeats", heartbeat())
        eventually(lambda: len(rows(database_url, "SELECT 1 FROM nodes WHERE received_at > now() - '2 s'::interval")))
        assert rows(database_url, "SELECT id FROM events") == [(event.id,)]
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
