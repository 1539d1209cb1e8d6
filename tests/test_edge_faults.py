"""Faults on the edge node, against a real broker, a real database and (where it matters) a real camera.

- the node SIGKILLed mid-stream and restarted: what was spooled is replayed, an alarm still on is one alert,
  an alarm that cleared meanwhile is cleared, what the sensors sent meanwhile is delivered; its last will says
  it went offline;
- the node SIGKILLed right after its alarms toggle, again and again: one alert per alarm, each transition once;
- sensor messages the broker sends again because the node's acknowledgements were lost (the node stored what
  they said, then died): acknowledged, not replayed on the restored rules, so no transition twice;
- a worker that dies is restarted with backoff and reported; a node that cannot recover exits non-zero;
- a locked disk does not stop the MQTT callback or the cameras.

Each counts by id or by sequence number and prints ``sent / stored / lost / duplicated``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO, _service_folder, edge_and_ingest, eventually, mqtt_client
from fire_helpers import query

from alerts.core.models import NodeStatus, utc_now
from alerts.intake.writer import IngestWorker
from deploy.local.services import Service, free_port, spawn, start_mosquitto
from edge.config import parse_config
from edge.node import EdgeNode
from edge.outbox import Spool

SITE = "willow-court"
SMOKE_A, SMOKE_B, PROBE = "zigbee2mqtt/smoke-a", "zigbee2mqtt/smoke-b", "zigbee2mqtt/probe"
STREAM = "patrolnet/sensors/stream-1"

NODE = """
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker}"}}
uplink: {{spool: "{spool}", heartbeat_s: 1{uplink}}}
supervision: {{max_restarts: {max_restarts}, window_s: 60}}
sensors:
  - {{id: smoke-a, adapter: zigbee2mqtt, topic: {SMOKE_A}}}
  - {{id: smoke-b, adapter: zigbee2mqtt, topic: {SMOKE_B}}}
  - {{id: probe, adapter: zigbee2mqtt, topic: {PROBE}}}
  - {{id: stream-1, adapter: native, topic: {STREAM}}}
{extra}"""


def node_yaml(broker: str, spool: Path, uplink: str = "", max_restarts: int = 5, extra: str = "") -> str:
    uplink_url = f', url: "{uplink}"' if uplink else ""
    return NODE.format(
        broker=broker, spool=spool, uplink=uplink_url, max_restarts=max_restarts, extra=extra, SMOKE_A=SMOKE_A,
        SMOKE_B=SMOKE_B, PROBE=PROBE, STREAM=STREAM,
    )  # fmt: skip


def publish(client: mqtt.Client, topic: str, body: dict, qos: int = 1) -> None:
    info = client.publish(topic, json.dumps(body), qos=qos)
    if qos:
        info.wait_for_publish(timeout=5)


class Stream:
    """Publishes ``{"readings": {"seq": n}}`` on the stream sensor, alternating QoS 1 and QoS 0, until stopped."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.sent: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.004):
            publish(self.client, STREAM, {"readings": {"seq": seq}}, qos=seq % 2)
            self.sent.append((seq, time.monotonic()))
            seq += 1


class Uplink:
    """Records the ids of what the node publishes upstream, and its statuses."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.statuses: queue.Queue[NodeStatus] = queue.Queue()

    def on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        channel = message.topic.rsplit("/", 1)[1]
        if channel == "status":
            self.statuses.put(NodeStatus.model_validate_json(message.payload))
            return
        if channel in ("events", "alerts", "readings"):
            body = json.loads(message.payload)
            self.ids.update(item["id"] for item in (body if isinstance(body, list) else [body]))

    def next_status(self, timeout: float = 30.0) -> NodeStatus:
        return self.statuses.get(timeout=timeout)


def spooled_ids(spool: Path) -> set[str]:
    ids: set[str] = set()
    for _, topic, payload in Spool(spool).after(0, 1_000_000):
        if topic.rsplit("/", 1)[1] in ("events", "alerts", "readings"):
            body = json.loads(payload)
            ids.update(item["id"] for item in (body if isinstance(body, list) else [body]))
    return ids


def stored_ids(database_url: str) -> Counter[str]:
    rows = query(database_url, "SELECT id::text FROM events UNION ALL SELECT id::text FROM readings")
    rows += query(database_url, "SELECT id::text FROM alerts")
    return Counter(row[0] for row in rows)


def stored_seqs(database_url: str) -> Counter[int]:
    rows = query(database_url, "SELECT value FROM readings WHERE device = 'stream-1' AND quantity = 'seq'")
    return Counter(int(value) for (value,) in rows)


def settle(read, done, timeout: float):
    """``read()`` once ``done`` of it holds, or its last value after ``timeout``: the counts tell what is lost."""
    deadline = time.monotonic() + timeout
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def report(what: str, sent: int, stored: int, lost: int, duplicated: int) -> None:
    print(f"{what}: sent / stored / lost / duplicated = {sent} / {stored} / {lost} / {duplicated}")


def wait_listening(sensors: mqtt.Client, database_url: str, timeout: float = 60.0) -> None:
    """Until a probe message has gone through the node into the database."""

    def through() -> bool:
        publish(sensors, PROBE, {"linkquality": 1})
        time.sleep(0.3)
        return bool(query(database_url, "SELECT 1 FROM readings WHERE device = 'probe'"))

    eventually(through, timeout=timeout, interval=0.2)


def fire_alerts(database_url: str) -> dict[str, tuple]:
    rows = query(database_url, "SELECT device, id::text, active, revision FROM alerts WHERE kind = 'fire'")
    assert len({device for device, *_ in rows}) == len(rows), f"two alerts for one detector: {rows}"
    return {device: tuple(rest) for device, *rest in rows}


class NodeProcess:
    """The node as a child process (``patrolnet edge run``), ended with the stack."""

    def __init__(self, config: Path, stack: ExitStack) -> None:
        self.config = config
        self.stack = stack
        self.process: subprocess.Popen
        self.start()

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = spawn(["edge", "run", "--config", str(self.config)], env, self.stack)

    def kill(self) -> None:
        self.process.kill()
        assert self.process.wait(timeout=10) == -9


@contextmanager
def node_with_ingest(
    broker: Service, database_url: str, config: Path, uplink: Uplink, channels: str = "+"
) -> Iterator[tuple[NodeProcess, mqtt.Client]]:
    """An ingest worker, the centre's view of the uplink, the sensors' client, and the node, listening."""
    worker = IngestWorker(broker.url, database_url, name="test-ingest")
    worker.start()
    assert worker.wait_ready()
    try:
        with (
            ExitStack() as stack,
            mqtt_client(broker, "test-centre", f"patrolnet/v1/{SITE}/{channels}", uplink.on_message),
            mqtt_client(broker, "test-sensors") as sensors,
        ):
            node = NodeProcess(config, stack)
            assert uplink.next_status().online is True
            wait_listening(sensors, database_url)
            yield node, sensors
    finally:
        worker.stop()


def test_node_sigkilled_mid_stream_replays_its_spool_and_keeps_its_alerts(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    spool = tmp_path / "outbox.sqlite3"
    config = tmp_path / "node.yaml"
    config.write_text(node_yaml(broker.url, spool))
    uplink = Uplink()
    with node_with_ingest(broker, database_url, config, uplink) as (node, sensors):
        with Stream(sensors) as stream:
            publish(sensors, SMOKE_A, {"smoke": True})
            publish(sensors, SMOKE_B, {"smoke": True})
            before = eventually(lambda: len(got := fire_alerts(database_url)) == 2 and got, timeout=30)
            time.sleep(1.0)
            # A burst just before the kill, so that some of it is in the node's spool, not yet acknowledged.
            for n in range(300):
                sensors.publish(PROBE, json.dumps({"linkquality": n % 250, "battery": 90}), qos=1)
            time.sleep(0.05)
            node.kill()
            killed = time.monotonic()
            will = uplink.next_status()
            assert will.online is False and will.node_id == "test-node"
            # zigbee2mqtt's way: QoS 0, not retained. The broker queues it for the node's session.
            publish(sensors, SMOKE_B, {"smoke": False}, qos=0)
            time.sleep(2.0)
            pending = spooled_ids(spool)
            restarted_at = time.monotonic()
            node.start()
            assert uplink.next_status().online is True
            back_s = time.monotonic() - restarted_at
            # The detector still sounding repeats itself after the restart.
            publish(sensors, SMOKE_A, {"smoke": True})
            time.sleep(1.0)
        down = [seq for seq, at in stream.sent if killed <= at <= restarted_at]
        sent_seqs = {seq for seq, _ in stream.sent}
        seqs = settle(lambda: stored_seqs(database_url), lambda got: sent_seqs <= set(got), timeout=60)
        after = eventually(
            lambda: (
                (got := fire_alerts(database_url))["smoke-a"][2] > before["smoke-a"][2]
                and not got["smoke-b"][1]
                and got
            ),
            timeout=30,
        )
        sent_ids = uplink.ids | pending
        ids = settle(lambda: stored_ids(database_url), lambda got: sent_ids <= set(got), timeout=30)
        a_events = query(
            database_url, "SELECT state FROM events WHERE device = 'smoke-a' AND type = 'smoke' ORDER BY ts"
        )

    lost_ids = sent_ids - set(ids)
    report("ids (events, alerts, readings)", len(sent_ids), len(sent_ids) - len(lost_ids), len(lost_ids),
           sum(n - 1 for n in ids.values()))  # fmt: skip
    duplicated = sum(n - 1 for n in seqs.values())
    lost = sent_seqs - set(seqs)
    for qos in (1, 0):
        sent_q = {seq for seq in sent_seqs if seq % 2 == qos}
        report(f"stream messages at QoS {qos}", len(sent_q), len(sent_q & set(seqs)), len(sent_q & lost),
               sum(n - 1 for seq, n in seqs.items() if seq % 2 == qos))  # fmt: skip
    in_flight = {seq for seq, at in stream.sent if killed - 1.0 <= at < killed}
    print(f"spooled at the kill: {len(pending)} ids; sent while down: {len(down)} messages; "
          f"node back in {back_s:.1f} s")  # fmt: skip
    assert not lost_ids and all(n == 1 for n in ids.values())
    # A QoS 0 message the broker had already written to the node's socket when it died is gone: QoS 0 has no
    # acknowledgement to wait for. Only those can be missing; every QoS 1 message is stored, once.
    assert all(seq % 2 == 0 for seq in lost) and lost <= in_flight and duplicated == 0
    assert down and set(down) <= set(seqs), "messages sent while the node was down were delivered"
    # One alert per detector: the one still on got a new revision, the one cleared meanwhile is cleared.
    assert after["smoke-a"][0] == before["smoke-a"][0] and after["smoke-a"][1] is True
    assert after["smoke-b"][0] == before["smoke-b"][0] and after["smoke-b"][1] is False
    # Its alarm started once; the confirmation by B and the repeat after the restart updated it.
    states = [state for (state,) in a_events]
    assert states.count("start") == 1 and states[-1] == "update"


def test_a_node_sigkilled_right_after_its_alarms_toggle_raises_one_alert_per_alarm(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    """Two detectors toggle together and the node is SIGKILLed 0 to 60 ms later, many times: whatever the
    moment, the spooled alert and the policy state that knows it are on disk together, so each detector stays
    one alert (a clear and a new alarm within the cooldown reopen it) and each transition is one event."""
    config = tmp_path / "node.yaml"
    config.write_text(node_yaml(broker.url, tmp_path / "outbox.sqlite3"))
    uplink = Uplink()
    rng = random.Random(8)
    sent: Counter[str] = Counter()
    with node_with_ingest(broker, database_url, config, uplink, channels="status") as (node, sensors):
        smoke, kills, deadline = False, 0, time.monotonic() + 150
        while kills < 30 and time.monotonic() < deadline:
            smoke = not smoke
            for topic in (SMOKE_A, SMOKE_B):
                publish(sensors, topic, {"smoke": smoke})
                sent["start" if smoke else "end"] += 1
            time.sleep(rng.uniform(0.0, 0.06))
            node.kill()
            node.start()
            while not uplink.next_status(timeout=60).online:
                pass
            kills += 1

        def transitions() -> Counter[str]:
            rows = query(
                database_url,
                "SELECT state FROM events WHERE type = 'smoke' AND state IN ('start', 'end')"
                " AND device IN ('smoke-a', 'smoke-b')",
            )
            return Counter(state for (state,) in rows)

        stored = settle(transitions, lambda got: got == sent, timeout=60)
        eventually(lambda: all(a[1] is smoke for a in fire_alerts(database_url).values()), timeout=30)
        rows = query(database_url, "SELECT device, count(*) FROM alerts WHERE kind = 'fire' GROUP BY device")
    lost = sum((sent - stored).values())
    report(f"alarm transitions over {kills} kills", sum(sent.values()), sum(stored.values()), lost,
           sum((stored - sent).values()))  # fmt: skip
    per_detector = dict(rows)
    print(f"alerts per detector: {per_detector}; last state smoke={smoke}")
    assert kills >= 8
    assert per_detector == {"smoke-a": 1, "smoke-b": 1}, "one alert per detector, never a second"
    assert stored == sent


class Relay:
    """A TCP relay to a local port, for the node's side of its broker: ``deafen()`` drops what the node sends
    from then on (its acknowledgements lost on the way), and a connection the node closes is cut on the broker's
    side too, with no DISCONNECT: what a node killed mid-stream leaves the broker."""

    def __init__(self, port: int) -> None:
        self.port_to = port
        self.deaf = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"mqtt://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def deafen(self) -> None:
        self.deaf.set()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                node, _ = self._server.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self.port_to))
            threading.Thread(target=self._pipe, args=(node, broker, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(broker, node, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_node: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (from_node and self.deaf.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def spooled_transitions(spool: Path, device: str) -> list[str]:
    """The states of the start and end events of ``device`` in the node's spool, in order."""
    states = []
    for _, topic, payload in Spool(spool).after(0, 1_000_000):
        if topic.endswith("/events"):
            body = json.loads(payload)
            for event in body if isinstance(body, list) else [body]:
                if event["place"]["device"] == device and event["state"] in ("start", "end"):
                    states.append(event["state"])
    return states


def test_messages_sent_again_after_the_node_stored_them_make_no_transition_twice(
    broker: Service, tmp_path: Path
) -> None:
    """The node stores a detector's alarm after a "smoke: false" that changed nothing, and dies before the broker
    reads either acknowledgement: the broker sends both again. Replayed on the restored rules (alarm on), the
    first would end the alarm and the second start it again; they are acknowledged and nothing more."""
    relay = Relay(broker.port)
    spool = tmp_path / "outbox.sqlite3"
    config = parse_config(node_yaml(relay.url, spool, uplink=broker.url))
    with mqtt_client(broker, "test-sensors") as sensors:
        node = EdgeNode(config)
        node.start()
        try:
            assert node.wait_ready(30)
            relay.deafen()
            publish(sensors, SMOKE_A, {"smoke": False})
            publish(sensors, SMOKE_A, {"smoke": True})
            eventually(lambda: spooled_transitions(spool, "smoke-a") == ["start"], timeout=20)
        finally:
            node.stop()
        relay.deaf.clear()
        restarted = EdgeNode(config)
        restarted.start()
        try:
            assert restarted.wait_ready(30)
            publish(sensors, PROBE, {"linkquality": 1})
            # Heard after what the broker sends again, which comes first.
            eventually(lambda: (probe := restarted.sensors.rules.state("probe")) and probe.last_seen, timeout=20)
            redelivered = restarted.sensors.counts["redelivered"]
        finally:
            restarted.stop()
            relay.close()
    transitions = spooled_transitions(spool, "smoke-a")
    print(f"sent again and known: {redelivered}; transitions of smoke-a: {transitions}")
    assert transitions == ["start"], "each transition once"
    assert redelivered == 2


def test_a_retained_alarm_at_start_raises_it(broker: Service, database_url: str, tmp_path: Path) -> None:
    config = parse_config(node_yaml(broker.url, tmp_path / "outbox.sqlite3"))
    with mqtt_client(broker, "test-sensors") as sensors:
        sensors.publish(SMOKE_A, json.dumps({"smoke": True}), qos=1, retain=True).wait_for_publish(timeout=5)
        with edge_and_ingest(config, broker, database_url):
            alerts = eventually(lambda: fire_alerts(database_url), timeout=20)
    assert list(alerts) == ["smoke-a"] and alerts["smoke-a"][1] is True


def test_a_subscriber_that_cannot_reach_its_broker_is_restarted_reported_and_then_hears_the_alarm(
    broker: Service, database_url: str, tmp_path: Path
) -> None:
    local_port = free_port()
    config = parse_config(
        node_yaml(f"mqtt://127.0.0.1:{local_port}", tmp_path / "outbox.sqlite3", uplink=broker.url, max_restarts=20)
    )
    worker = IngestWorker(broker.url, database_url, name="test-ingest")
    worker.start()
    assert worker.wait_ready()
    node = EdgeNode(config)
    node.start()
    try:
        restarts = eventually(lambda: node.heartbeat(utc_now()).counters["worker_restarts.sensors"] >= 2, timeout=20)
        assert restarts and not node.wait_ready(0.1)
        started = time.monotonic()
        with start_mosquitto(_service_folder("patrolnet-local-"), port=local_port) as local:
            assert node.wait_ready(30)
            recovered_s = time.monotonic() - started
            with mqtt_client(local, "test-sensors") as sensors:
                publish(sensors, SMOKE_A, {"smoke": True})
                eventually(lambda: "smoke-a" in fire_alerts(database_url), timeout=20)
            trouble = eventually(
                lambda: query(
                    database_url,
                    "SELECT a.route, a.active, a.title FROM alerts a WHERE a.type = 'worker_failed' AND NOT a.active",
                ),
                timeout=20,
            )
            heartbeat = node.heartbeat(utc_now())
    finally:
        node.stop()
        worker.stop()
    print(f"subscriber restarts: {heartbeat.counters['worker_restarts.sensors']:.0f}; listening {recovered_s:.1f} s "
          "after its broker came up")  # fmt: skip
    assert heartbeat.counters["worker_ok.sensors"] == 1.0 and heartbeat.counters["worker_restarts.sensors"] >= 2
    assert trouble[0][0] == "operator" and "sensors" in trouble[0][2]
    assert node.failure is None


@pytest.mark.slow
def test_a_node_that_cannot_recover_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    config.write_text(node_yaml(nowhere, tmp_path / "outbox.sqlite3", max_restarts=2))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with ExitStack() as stack:
        started = time.monotonic()
        node = spawn(["edge", "run", "--config", str(config)], env, stack)
        code = node.wait(timeout=60)
    print(f"gave up after {time.monotonic() - started:.1f} s with exit code {code}")
    assert code == 1


CAMERA = """cameras:
  - id: cam-walkway
    capture: {{url: "{camera}"}}
    scene:
      zones: [{{name: walkway, polygon: [[0, 0.33], [1, 0.40], [1, 0.85], [0, 0.45]]}}]
      rules: [{{type: intrusion, zone: walkway}}]
"""


def test_a_locked_disk_stalls_neither_the_mqtt_callback_nor_the_cameras(
    broker: Service, database_url: str, rtsp_camera: Service, tmp_path: Path
) -> None:
    spool = tmp_path / "outbox.sqlite3"
    config = parse_config(node_yaml(broker.url, spool, extra=CAMERA.format(camera=rtsp_camera.url)))
    # Fewer than the node lets wait unacknowledged (half its broker.max_inflight, 20 by default): with the disk
    # locked nothing is acknowledged, and the broker rightly holds back what comes after a full window.
    hold_s, sent = 3.0, 8
    with edge_and_ingest(config, broker, database_url) as node, mqtt_client(broker, "test-sensors") as sensors:
        assert node.video is not None
        eventually(lambda: node.video.stats()["cam-walkway"]["analysed"] > 5, timeout=60)
        locker = sqlite3.connect(spool, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            locked_at = time.monotonic()
            handled = node.sensors.liveness.handled
            analysed = node.video.stats()["cam-walkway"]["analysed"]
            for seq in range(sent):
                publish(sensors, STREAM, {"readings": {"seq": seq}})
            publish(sensors, SMOKE_A, {"smoke": True})
            eventually(lambda: node.sensors.liveness.handled >= handled + sent + 1, timeout=hold_s - 0.5)
            callbacks_s = time.monotonic() - locked_at
            time.sleep(max(0.0, hold_s - callbacks_s))
            frames = node.video.stats()["cam-walkway"]["analysed"] - analysed
            waiting = node.sink.pending() + node.sink.liveness.busy_s(time.monotonic())
            assert not query(database_url, "SELECT 1 FROM alerts WHERE kind = 'fire'"), "nothing got past the lock"
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        eventually(lambda: "smoke-a" in fire_alerts(database_url), timeout=30)
        seqs = eventually(lambda: len(got := stored_seqs(database_url)) >= sent and got, timeout=30)
        retries = node.counts["disk_retries"]
    report("messages during the lock", sent, len(seqs), sent - len(set(seqs)), sum(n - 1 for n in seqs.values()))
    print(f"{sent + 1} callbacks returned in {callbacks_s:.2f} s with the disk locked; the camera analysed "
          f"{frames} frames in the {hold_s:.0f} s; disk retries {retries}")  # fmt: skip
    assert frames > 0 and waiting > 0
    assert set(seqs) == set(range(sent)) and all(n == 1 for n in seqs.values())
