"""Delivered means stored: a node keeps each message until ingest confirms it committed it, so what a killed
broker forgot or a dead worker stranded is sent again and stored, once (the insert is idempotent by id).

Each test counts sent / stored / lost / duplicated by id (run with ``-s`` to see them).
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from broker_helpers import NOT_AUTHORIZED, Probe, node_probe, secure_central
from conftest import ApiServer, SseReader, eventually
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

from alerts.core.protocol import confirm_topic, uplink_topic
from deploy.local.services import Service, spawn
from edge.outbox import Spool, SpoolBounds, Uplink

NODE = "fault-node"
"""The node of fault_helpers.node_yaml."""
SAVED_AFTER_S = 32.0
"""The shipped central config saves every 30 s: killed after this, the broker restarts with ingest's session."""


def test_ingest_may_publish_confirmations_to_any_sites_commands_and_nothing_else() -> None:
    broker = secure_central({"node-a": PLACE.site})
    try:
        with node_probe(broker, "ingest") as ingest_client, node_probe(broker, "node-a", "node-a-secret") as node:
            assert node.subscribe(confirm_topic(PLACE.site, "node-a")) == 1
            assert ingest_client.publish(confirm_topic(PLACE.site, "node-a"), b'{"ids": []}') == 0
            eventually(lambda: node.messages)
            assert ingest_client.publish(confirm_topic("oak-yard", "node-b"), b"{}") == 16  # allowed, nobody there
            assert ingest_client.publish(uplink_topic(PLACE.site, "alerts"), b"{}") == NOT_AUTHORIZED
            assert ingest_client.publish("patrolnet/v1/willow-court/other", b"{}") == NOT_AUTHORIZED
    finally:
        broker.service.stop()


@pytest.mark.parametrize("monitor", [False, True], ids=["ingest-only", "with-a-monitor"])
def test_central_broker_sigkilled_with_the_shipped_autosave_loses_nothing_it_acknowledged(
    monitor: bool, broker: Service, database_url: str, api: ApiServer, tmp_path: Path
) -> None:
    """A node's detectors alarm and clear while the central broker runs as shipped (saved every 30 s); it is
    SIGKILLed with ingest after its first save, restarted, and ingest 5 s later. With ``monitor``, a second
    subscriber reads the uplink from the restart on, so the broker acknowledges what no ingest session takes."""
    central = secure_central({NODE: PLACE.site}, monitor=monitor)
    started = time.monotonic()
    ingest_env = env(central.url("ingest"), database_url)
    with ExitStack() as stack, SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire")) as stream:
        stack.callback(central.service.stop)
        worker = spawn(["ingest", "--name", "central-1"], ingest_env, stack)
        eventually(lambda: query(database_url, "SELECT 1 FROM ingest_workers"), timeout=90, interval=0.3)
        node_env = env(broker.url, database_url, PATROLNET_UPLINK_URL=central.url(NODE, f"{NODE}-secret"))
        spawn(["edge", "run", "--config", str(node_yaml(tmp_path, broker))], node_env, stack)
        eventually(lambda: query(database_url, "SELECT 1 FROM nodes WHERE node_id = %s", (NODE,)), timeout=90)
        with Detectors(broker, rate=5) as detectors:
            time.sleep(max(3.0, SAVED_AFTER_S - (time.monotonic() - started)))
            central.service.kill()
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            time.sleep(5)
            central.service.start()
            back = time.monotonic()
            if monitor:
                reader = stack.enter_context(Probe(central.ports[1883], "monitor", "monitor-secret"))
                assert reader.subscribe("patrolnet/v1/+/+") == 1
            time.sleep(5)
            spawn(["ingest", "--name", "central-1"], ingest_env, stack)
            time.sleep(3)
            detectors.halt()
            eventually(lambda: len(stored_seqs(database_url)) >= detectors.count(), timeout=120, interval=0.5)
            print(f"every reading stored {time.monotonic() - back:.1f} s after the broker was back")
            tally_node_events(f"central broker SIGKILLed (monitor: {monitor})", database_url)
        if monitor:
            print(f"the monitor read {len(reader.messages)} uplink messages after the restart")
        assert tally_detectors(f"central broker SIGKILLed (monitor: {monitor})", database_url, detectors) == (0, 0, 0)
        fire_changes = "SELECT c.seq FROM alert_changes c JOIN alerts a ON a.id = c.alert_id WHERE a.kind = 'fire'"
        stored = {seq for (seq,) in query(database_url, fire_changes)}
        seen: set[int] = set()

        def streamed() -> bool:
            seen.update(int(seq) for seq, _, _ in stream.drain(0.5))
            return stored <= seen

        eventually(streamed, timeout=30)
        print(f"fire desk stream: {len(stored)} alert changes stored, all {len(stored & seen)} streamed")
        assert len(stored) >= detectors.count() // 2, "an alarm or clear without its alert change"


def test_three_workers_one_sigkilled_half_way_and_never_back_every_message_stored_once_within_a_minute(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    """A dead worker's share waits in its session; the living take the session over (its liveness row stops)
    and the node sends again what stays unconfirmed."""
    total = 20_000
    spool = Spool(tmp_path / "outbox.sqlite3")
    events = [event(i) for i in range(total)]
    with spool.transaction():
        for e in events:
            spool.put(uplink_topic(PLACE.site, "events"), e.model_dump_json().encode())
    with ExitStack() as stack:
        workers = {name: ingest(broker, database_url, stack, "--name", name) for name in ("w1", "w2", "w3")}
        eventually(lambda: query(database_url, "SELECT count(*) FROM ingest_workers")[0][0] == 3, timeout=90)
        uplink = Uplink(spool, broker.url, "patrolnet-edge-test-uplink", confirm_topic=confirm_topic(PLACE.site, "t"))
        started = time.monotonic()
        uplink.start()
        stack.callback(uplink.stop)
        count = "SELECT count(*) FROM events"
        eventually(lambda: query(database_url, count)[0][0] >= total // 2, timeout=60, interval=0.1)
        workers["w2"].send_signal(signal.SIGKILL)
        workers["w2"].wait(timeout=10)
        killed = time.monotonic() - started
        eventually(lambda: query(database_url, count)[0][0] >= total, timeout=90, interval=0.2)
        stored_s = time.monotonic() - started
        eventually(lambda: spool.pending() == 0, timeout=30)
        mark = "SELECT counters->>'drained_by' FROM ingest_workers WHERE name = 'w2' AND counters ? 'drained_by'"
        drained = eventually(lambda: query(database_url, mark), timeout=30)
    print(f"w2 SIGKILLed {killed:.1f} s in; all {total} stored {stored_s:.1f} s after the start; "
          f"the node sent {uplink.resent} again; w2's session drained by {drained[0][0]}")  # fmt: skip
    assert tally("three workers, one SIGKILLed for good", database_url, "events", [e.id for e in events]) == (0, 0)
    assert stored_s < 60
    assert drained[0][0] in ("w1", "w3"), "a living worker took the dead one's session over"


def test_the_spool_evicts_old_and_surplus_readings_first_and_alarms_only_when_they_alone_fill_it(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "outbox.sqlite3", SpoolBounds(max_messages=4, max_age_s=60.0))
    readings, alerts = uplink_topic(PLACE.site, "readings"), uplink_topic(PLACE.site, "alerts")
    for topic in (readings, alerts, readings, alerts, readings):
        spool.put(topic, b"[]")
    assert spool.enforce_bounds() == 1
    assert [topic for _, topic, _ in spool.after(0, 10)] == [alerts, readings, alerts, readings]
    later = time.time() + 120
    assert spool.enforce_bounds(now=later) == 2, "readings past their age go, alarms stay"
    for _ in range(4):
        spool.put(alerts, b"{}")
    assert spool.enforce_bounds(now=later) == 2, "only alarms left: the oldest go, as the bound says"
    assert spool.pending() == 4 and dict(spool.evicted) == {"readings": 3, "alerts": 2}
    count, oldest_s = spool.backlog(now=later)
    assert count == 4 and oldest_s is not None and oldest_s >= 119
