"""Faults on the uplink and at the centre, against real brokers, PostgreSQL and node and ingest processes.

Each test sends messages with known ids, breaks something, mends it, and counts rows by id against what was
sent, printing ``sent / stored / lost / duplicated`` (run with ``-s`` to see them).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from uuid import UUID

import pytest
from conftest import _service_folder, eventually, mqtt_client
from fault_helpers import (
    PLACE,
    Detectors,
    env,
    event,
    ingest,
    node_yaml,
    stored_seqs,
    tally,
    tally_detectors,
    tally_node_events,
)
from fire_helpers import query

from alerts.core.models import Heartbeat, utc_now
from alerts.core.protocol import uplink_topic
from deploy.local.services import Service, spawn, start_mosquitto
from edge.outbox import Spool, Uplink

DOWN_S = 30.0


class Sender:
    """The node's outbox and uplink, sending numbered events at a steady rate from a thread."""

    def __init__(self, url: str, folder: Path, rate: float) -> None:
        self.uplink = Uplink(Spool(folder / "outbox.sqlite3"), url, client_id="patrolnet-edge-test-uplink")
        self.rate = rate
        self.ids: list[UUID] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sender:
        self.uplink.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt()
        self.uplink.stop()

    def halt(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / self.rate):
            e = event(i)
            self.uplink.send(uplink_topic(PLACE.site, "events"), e.model_dump_json().encode())
            self.ids.append(e.id)
            i += 1

    def drained(self) -> bool:
        return self.uplink.spool.pending() == 0


def ingest_ready(database_url: str, name: str) -> bool:
    return bool(query(database_url, "SELECT 1 FROM ingest_workers WHERE name = %s", (name,)))


def test_postgres_stopped_30_s_ingest_holds_and_retries_nothing_lost_or_duplicated(
    broker: Service, database_url: str, postgres: Service, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        worker = ingest(broker, database_url, stack, "--name", "pg-test")
        eventually(lambda: ingest_ready(database_url, "pg-test"), timeout=90, interval=0.3)
        with Sender(broker.url, tmp_path, rate=20) as sender:
            time.sleep(3)
            postgres.stop()
            stopped = time.monotonic()
            time.sleep(DOWN_S)
            postgres.start()
            started = time.monotonic()
            time.sleep(3)
            sender.halt()
            eventually(sender.drained, timeout=60)
            count = len(sender.ids)
            eventually(lambda: query(database_url, "SELECT count(*) FROM events")[0][0] >= count, timeout=60)
            caught_up = time.monotonic()
        assert worker.poll() is None, "ingest exited while the database was away"
        liveness = query(database_url, "SELECT now() - last_batch_at FROM ingest_workers WHERE name = 'pg-test'")
        assert liveness[0][0].total_seconds() < 30, "the worker's last batch is recorded"
        print(f"database down {started - stopped:.1f} s; all stored {caught_up - started:.1f} s after it was back")
        assert tally("postgres stopped", database_url, "events", sender.ids) == (0, 0)


def test_ingest_sigkilled_and_restarted_without_a_name_loses_nothing(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        worker = ingest(broker, database_url, stack)
        eventually(lambda: query(database_url, "SELECT name FROM ingest_workers"), timeout=90, interval=0.3)
        with Sender(broker.url, tmp_path, rate=50) as sender:
            time.sleep(2)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            time.sleep(5)  # everything sent meanwhile waits in the worker's session on the broker
            during = len(sender.ids)
            ingest(broker, database_url, stack)
            time.sleep(2)
            sender.halt()
            eventually(sender.drained, timeout=60)
            eventually(lambda: query(database_url, "SELECT count(*) FROM events")[0][0] >= len(sender.ids), timeout=60)
        print(f"{during} events sent before the restart")
        assert tally("ingest SIGKILLed, restarted without --name", database_url, "events", sender.ids) == (0, 0)


def test_three_workers_one_sigkilled_half_way_every_message_stored_once(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    total, kill_at = 20_000, 10_000
    with ExitStack() as stack, mqtt_client(broker, "test-edge-uplink") as publisher:
        # No takeover: this is the dead worker restarted under its name (test_confirm.py: never restarted).
        workers = {
            name: ingest(broker, database_url, stack, "--name", name, "--takeover-after", "0")
            for name in ("w1", "w2", "w3")
        }
        eventually(lambda: query(database_url, "SELECT count(*) FROM ingest_workers")[0][0] == 3, timeout=90)
        probe = Heartbeat(node_id="probe", place=PLACE.model_copy(update={"device": None}), started_at=utc_now())

        def subscribed() -> list[tuple]:
            # Until a worker subscribed, the broker drops what it gets: this publisher has no outbox.
            publisher.publish(uplink_topic(PLACE.site, "heartbeats"), probe.model_dump_json().encode(), qos=1)
            return query(database_url, "SELECT 1 FROM nodes")

        eventually(subscribed, timeout=90, interval=0.3)
        ids = []
        restarted_at = killed_at = 0.0
        stored_at_restart = 0
        for i in range(total):
            e = event(i)
            info = publisher.publish(uplink_topic(PLACE.site, "events"), e.model_dump_json().encode(), qos=1)
            ids.append(e.id)
            if i % 500 == 0:
                info.wait_for_publish(timeout=10)
            if i == kill_at:
                info.wait_for_publish(timeout=10)
                workers["w2"].send_signal(signal.SIGKILL)
                workers["w2"].wait(timeout=10)
                killed_at = time.monotonic()
        info.wait_for_publish(timeout=30)
        # With w2 away, the others store their shares; w2's share waits in its session on the broker.
        eventually(lambda: query(database_url, "SELECT count(*) FROM events")[0][0] >= total * 0.6, timeout=60)
        time.sleep(2)
        stored_at_restart = query(database_url, "SELECT count(*) FROM events")[0][0]
        waited = time.monotonic() - killed_at
        workers["w2"] = ingest(broker, database_url, stack, "--name", "w2", "--takeover-after", "0")  # as systemd would
        restarted_at = time.monotonic()
        eventually(lambda: query(database_url, "SELECT count(*) FROM events")[0][0] >= total, timeout=120)
        caught_up = time.monotonic() - restarted_at
    print(
        f"w2 down {waited:.1f} s: {stored_at_restart} of {total} stored meanwhile, "
        f"{total - stored_at_restart} waited for it; all stored {caught_up:.1f} s after its restart"
    )
    assert stored_at_restart < total, "nothing waited for the dead worker: the test measured nothing"
    assert tally("three workers, one SIGKILLed", database_url, "events", ids) == (0, 0)


@pytest.fixture
def central() -> Iterator[Service]:
    """The uplink broker, saved at every change so that a SIGKILL loses nothing it acknowledged."""
    with start_mosquitto(_service_folder("patrolnet-central-"), save_every_change=True) as service:
        yield service


@pytest.mark.parametrize("how", ["sigterm", "sigkill-with-ingest"])
def test_uplink_broker_down_30_s_while_detectors_alarm_and_clear_and_a_camera_detects(
    how: str, broker: Service, central: Service, rtsp_camera: Service, database_url: str, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        worker = ingest(central, database_url, stack)
        eventually(lambda: query(database_url, "SELECT name FROM ingest_workers"), timeout=90, interval=0.3)
        node_env = env(broker.url, database_url, PATROLNET_UPLINK_URL=central.url)
        config = node_yaml(tmp_path, broker, camera=rtsp_camera)
        spawn(["edge", "run", "--config", str(config)], node_env, stack)
        eventually(lambda: query(database_url, "SELECT 1 FROM nodes WHERE node_id = 'fault-node'"), timeout=90)
        with Detectors(broker, rate=5) as detectors:
            time.sleep(3)
            if how == "sigterm":
                central.stop()
            else:
                central.kill()
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
            time.sleep(DOWN_S)
            central.start()
            back = time.monotonic()
            if how != "sigterm":
                ingest(central, database_url, stack)
            time.sleep(3)
            detectors.halt()
            eventually(lambda: len(stored_seqs(database_url)) >= detectors.count(), timeout=90, interval=0.5)
            print(f"{how}: every message stored {time.monotonic() - back:.1f} s after the broker was back")
            rtsp_camera.stop()
            camera = tally_node_events(f"uplink broker down 30 s ({how})", database_url)
        result = tally_detectors(f"uplink broker down 30 s ({how})", database_url, detectors)
        assert result == (0, 0, 0)
        assert camera > 0, "the camera raised no event: the test measured nothing of it"
        last = {s: seqs[-1] % 2 == 0 for s, seqs in detectors.sent.items()}
        active = dict(query(database_url, "SELECT device, active FROM alerts WHERE type = 'smoke'"))
        assert active == last, "one alert per detector, active exactly when its last message was an alarm"


def test_a_worker_retired_for_good_is_drained_and_its_share_stored(broker: Service, database_url: str) -> None:
    """A dead worker's share waits in its session (and Mosquitto drops it when the session expires):
    ``patrolnet ingest --drain NAME`` stores it and ends the session, so new messages all go to the living."""
    with ExitStack() as stack, mqtt_client(broker, "test-edge-uplink") as publisher:
        # No takeover by w1: this is the operator retiring w2 by hand.
        ingest(broker, database_url, stack, "--name", "w1", "--takeover-after", "0")
        retired = ingest(broker, database_url, stack, "--name", "w2", "--takeover-after", "0")
        eventually(lambda: query(database_url, "SELECT count(*) FROM ingest_workers")[0][0] == 2, timeout=90)
        retired.send_signal(signal.SIGKILL)
        retired.wait(timeout=10)

        def burst(first: int, count: int) -> list[UUID]:
            sent = [event(i) for i in range(first, first + count)]
            for e in sent:
                info = publisher.publish(uplink_topic(PLACE.site, "events"), e.model_dump_json().encode(), qos=1)
            info.wait_for_publish(timeout=30)
            return [e.id for e in sent]

        ids = burst(0, 3000)
        time.sleep(5)
        waiting = len(ids) - query(database_url, "SELECT count(*) FROM events")[0][0]
        started = time.monotonic()
        drain = spawn(["ingest", "--drain", "w2"], env(broker.url, database_url), stack)
        assert drain.wait(timeout=120) == 0
        print(f"{waiting} messages waited in the dead worker's session; drained in {time.monotonic() - started:.1f} s")
        assert waiting > 0, "nothing waited for the dead worker: the test measured nothing"
        assert tally("retired worker drained", database_url, "events", ids) == (0, 0)
        later = burst(3000, 300)
        eventually(lambda: query(database_url, "SELECT count(*) FROM events")[0][0] >= 3300, timeout=30)
        assert tally("after its session ended", database_url, "events", later) == (0, 0)
