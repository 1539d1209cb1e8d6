"""Sensor benchmark: readings per second into the database, and alarm latency to the fire desk's stream.

    .venv/bin/python bench/bench_sensors.py [--messages 20000] [--alarms 200]

Starts its own PostgreSQL and Mosquitto, then measures, on the same broker:

(a) throughput: zigbee2mqtt state messages of 50 sensors (5 readings each)
    published as fast as a QoS 1 publisher can, first to a bare paho
    subscriber, then through an edge node and an ingest worker (each its own
    process, as deployed) until every reading is a row; nothing may be lost;
(b) alarm latency: from a detector's publish of ``smoke: true`` until the
    alert arrives on the fire desk's SSE stream (the alert API in a thread of
    this process), while 1,000 readings per second of background load flow.

It also prints the CPU time each process spent on the throughput run, which
tells where the pipeline's cost goes. For where inside a process, profile
every thread of every process with py-spy (not a dependency):
``py-spy record -f raw -o prof.raw --subprocesses --threads -- python bench/bench_sensors.py``.
Prints figures; exits 1 only when a reading was lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg

from alerts.auth import Principal, create_key
from alerts.core.models import Place, Role
from alerts.core.mqtt import connect, make_client
from alerts.core.protocol import uplink_topic
from alerts.store.database import migrate
from alerts.store.sites import register
from deploy.local.services import ApiThread, spawn, start_mosquitto, start_postgres

log = logging.getLogger(__name__)

BENCH_SITE = Place(sub_district="sd", community="c", grid="g", site="bench-court")
SENSORS = 50
READINGS_PER_MESSAGE = 5
ALARM_TOPIC = "zigbee2mqtt/bench-alarm"
REPO = Path(__file__).resolve().parent.parent


def folder(parent: Path, name: str) -> Path:
    # Services run as their own users, so their folders must be reachable by them.
    path = parent / name
    path.mkdir()
    os.chmod(path, 0o755)
    return path


def state(i: int, smoke: bool = False) -> bytes:
    """A zigbee2mqtt smoke and climate sensor's state: five readings."""
    return json.dumps(
        {"smoke": smoke, "temperature": 20 + i % 50 / 10, "humidity": 40 + i % 20, "battery": 87, "linkquality": 120}
    ).encode()


def node_yaml(broker_url: str, spool: Path) -> str:
    sensors = "".join(
        f"  - {{id: s{i:03d}, adapter: zigbee2mqtt, topic: zigbee2mqtt/s{i:03d}}}\n" for i in range(SENSORS)
    )
    return f"""node_id: bench-node
site: {{id: {BENCH_SITE.site}, sub_district: {BENCH_SITE.sub_district}, community: {BENCH_SITE.community}, \
grid: {BENCH_SITE.grid}}}
broker: {{url: "{broker_url}", max_inflight: 1000}}
uplink: {{spool: "{spool}", max_inflight: 1000}}
sensors:
  - {{id: bench-alarm, adapter: zigbee2mqtt, topic: {ALARM_TOPIC}}}
{sensors}"""


def client(url: str, name: str) -> mqtt.Client:
    mqtt_client, address, props = make_client(url, name)
    mqtt_client.max_inflight_messages_set(1000)
    connect(mqtt_client, address, props)
    deadline = time.monotonic() + 10
    while not mqtt_client.is_connected():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not connect")
        time.sleep(0.01)
    return mqtt_client


def publish_all(publisher: mqtt.Client, messages: int) -> float:
    """Publishes ``messages`` states round-robin over the sensors; returns when it started."""
    started = time.perf_counter()
    last = None
    for i in range(messages):
        last = publisher.publish(f"zigbee2mqtt/s{i % SENSORS:03d}", state(i), qos=1)
    if last is not None:
        last.wait_for_publish(timeout=120)
    return started


def bare_rate(url: str, messages: int) -> float:
    """Messages per second a bare paho subscriber receives of ``messages`` published at full speed."""
    done, received = threading.Event(), [0, 0.0]

    def on_message(client, userdata, message) -> None:
        received[0] += 1
        if received[0] == messages:
            received[1] = time.perf_counter()
            done.set()

    subscriber = client(url, "bench-bare")
    subscriber.on_message = on_message
    subscriber.subscribe("zigbee2mqtt/#", qos=1)
    time.sleep(0.5)
    publisher = client(url, "bench-publisher")
    started = publish_all(publisher, messages)
    if not done.wait(120):
        raise RuntimeError(f"the bare subscriber got {received[0]} of {messages}")
    for c in (subscriber, publisher):
        c.disconnect()
        c.loop_stop()
    return messages / (received[1] - started)


def count_readings(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return int(row[0])


def wait_for_pipeline(url: str, database_url: str) -> None:
    """Until a probe message makes it into the database: the node and ingest are up and subscribed."""
    probe = client(url, "bench-probe")
    deadline = time.monotonic() + 60
    while count_readings(database_url) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no reading reached the database in 60 s")
        probe.publish("zigbee2mqtt/s000", state(0), qos=1)
        time.sleep(0.5)
    probe.disconnect()
    probe.loop_stop()
    time.sleep(1.0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time of a process (all its threads) so far, with that of its reaped children if asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu(data_folder: Path) -> float:
    """The postmaster with its exited backends, plus the backends running now."""
    postmaster = int((data_folder / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                total += cpu_seconds(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def cpu_by_part(parts: dict[str, int], pg_data: Path) -> dict[str, float]:
    return {**{name: cpu_seconds(pid) for name, pid in parts.items()}, "postgresql": postgres_cpu(pg_data)}


def pipeline_rate(url: str, database_url: str, messages: int) -> tuple[float, int]:
    """Readings per second from publish to committed rows, and how many rows there are."""
    publisher = client(url, "bench-publisher")
    started = publish_all(publisher, messages)
    expected, rows = messages * READINGS_PER_MESSAGE, 0
    deadline = time.monotonic() + 300
    while rows < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = count_readings(database_url)
    finished = time.perf_counter()
    publisher.disconnect()
    publisher.loop_stop()
    return rows / (finished - started), rows


class AlarmStream:
    """The fire desk's SSE stream, read in a thread; ``changes`` gets (arrival time, change, alert) of one device."""

    def __init__(self, url: str, key: str, device: str) -> None:
        self.changes: queue.Queue[tuple[float, str, dict]] = queue.Queue()
        self._device = device
        self._open = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, key), daemon=True)
        self._thread.start()
        if not self._open.wait(10):
            raise TimeoutError("the SSE stream did not open")

    def _read(self, url: str, key: str) -> None:
        try:
            with self._client.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as response:
                self._open.set()
                change = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        change = line[7:]
                    elif line.startswith("data: "):
                        alert = json.loads(line[6:])
                        if alert["place"]["device"] == self._device:
                            self.changes.put((time.perf_counter(), change, alert))
        except httpx.HTTPError as exc:
            # Closing the client, or the server going away at the end, ends the stream.
            log.info("SSE stream ended: %s", exc)

    def wait(self, active: bool, timeout: float = 10.0) -> float:
        """Arrival time of the next change of the device's alert to ``active``."""
        while True:
            arrived, _, alert = self.changes.get(timeout=timeout)
            if alert["active"] is active:
                return arrived

    def close(self) -> None:
        self._client.close()


def background_load(url: str, readings_per_s: float, stop: threading.Event) -> None:
    publisher = client(url, "bench-background")
    period = READINGS_PER_MESSAGE / readings_per_s
    due, i = time.perf_counter(), 0
    while not stop.is_set():
        publisher.publish(f"zigbee2mqtt/s{i % SENSORS:03d}", state(i), qos=1)
        i += 1
        due += period
        time.sleep(max(0.0, due - time.perf_counter()))
    publisher.disconnect()
    publisher.loop_stop()


def uplink_tap(url: str, raised: queue.Queue[float]) -> mqtt.Client:
    """Notes when each raised alarm leaves the node: its alert on the uplink topic, beside ingest's subscription."""

    def on_message(client, userdata, message) -> None:
        if json.loads(message.payload)["active"]:
            raised.put(time.perf_counter())

    tap = client(url, "bench-uplink-tap")
    tap.on_message = on_message
    tap.subscribe(uplink_topic(BENCH_SITE.site, "alerts"), qos=1)
    return tap


def alarm_latencies(url: str, api_url: str, key: str, alarms: int, background: float) -> list[tuple[float, float]]:
    """(seconds to the node's uplink, seconds to the SSE stream) from the detector's publish, one per alarm."""
    stream = AlarmStream(f"{api_url}/api/v1/alerts/stream", key, "bench-alarm")
    left_node: queue.Queue[float] = queue.Queue()
    tap = uplink_tap(url, left_node)
    stop = threading.Event()
    load = threading.Thread(target=background_load, args=(url, background, stop), daemon=True)
    load.start()
    detector = client(url, "bench-detector")
    latencies = []
    try:
        time.sleep(2.0)
        for i in range(alarms):
            sent = time.perf_counter()
            detector.publish(ALARM_TOPIC, state(i, smoke=True), qos=1)
            arrived = stream.wait(active=True)
            latencies.append((left_node.get(timeout=10) - sent, arrived - sent))
            detector.publish(ALARM_TOPIC, state(i, smoke=False), qos=1)
            stream.wait(active=False)
            time.sleep(0.05)
    finally:
        stop.set()
        load.join(timeout=5)
        for c in (detector, tap):
            c.disconnect()
            c.loop_stop()
        stream.close()
    return latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="state messages for the throughput run")
    parser.add_argument("--alarms", type=int, default=200, help="alarms for the latency run")
    parser.add_argument("--background", type=float, default=1000.0, help="readings/s of load during the alarms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="patrolnet-bench-"))
    os.chmod(work, 0o755)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        db = stack.enter_context(start_postgres(folder(work, "postgres")))
        broker = stack.enter_context(start_mosquitto(folder(work, "mosquitto")))
        migrate(db.url)
        register(db.url, BENCH_SITE, "bench-node")
        assert broker.proc is not None
        broker_pid = broker.proc.pid
        bare = bare_rate(broker.url, args.messages)

        config = work / "node.yaml"
        config.write_text(node_yaml(broker.url, work / "outbox.sqlite3"))
        env = {**os.environ, "PATROLNET_DATABASE_URL": db.url, "PATROLNET_MQTT_URL": broker.url}
        with ExitStack() as pipeline:
            parts = {
                "edge node": spawn(["edge", "run", "--config", str(config)], env, pipeline).pid,
                "ingest": spawn(["ingest", "--name", "bench-ingest"], env, pipeline).pid,
                "mosquitto": broker_pid,
                "publisher (this process)": os.getpid(),
            }
            wait_for_pipeline(broker.url, db.url)
            before = cpu_by_part(parts, db.folder / "pgdata")
            wall = time.perf_counter()
            rate, rows = pipeline_rate(broker.url, db.url, args.messages)
            wall = time.perf_counter() - wall
            cpu = {name: s - before[name] for name, s in cpu_by_part(parts, db.folder / "pgdata").items()}
            key = create_key(db.url, Principal(name="bench fire desk", role=Role.FIRE))
            with ApiThread(db.url) as api:
                latencies = alarm_latencies(broker.url, api.url, key, args.alarms, args.background)

        expected = args.messages * READINGS_PER_MESSAGE
        bare_readings = bare * READINGS_PER_MESSAGE
        print(f"\nthroughput, {args.messages} messages of {READINGS_PER_MESSAGE} readings from {SENSORS} sensors:")
        print(f"  bare paho subscriber      {bare:9.0f} msg/s = {bare_readings:9.0f} readings/s")
        print(f"  broker -> node -> ingest -> PostgreSQL  {rate:9.0f} readings/s  ({rate / bare_readings:.2f} of bare)")
        print(f"  rows {rows} of {expected}: {'nothing lost' if rows == expected else 'LOST ' + str(expected - rows)}")
        print(f"  CPU in the {wall:.1f} s of that run, on {os.cpu_count()} cores:")
        for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
            share, per_reading = seconds / wall, seconds / rows * 1e6
            print(f"    {name:<26} {seconds:6.2f} s  {share:4.0%} of a core  {per_reading:5.1f} us/reading")
        print(f"alarm latency from the detector's publish ({len(latencies)} alarms, {args.background:.0f} readings/s):")
        for i, to in enumerate(("the alert leaving the edge node", "the alert on the fire SSE stream")):
            ms = [pair[i] * 1000 for pair in latencies]
            p50, p99 = percentile(ms, 50), percentile(ms, 99)
            print(f"  to {to:<34} p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  max {max(ms):5.1f} ms")
        return 0 if rows == expected else 1


if __name__ == "__main__":
    sys.exit(main())
