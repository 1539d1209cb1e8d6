"""Sensor benchmark: readings per second into the database, and alarm latency to the fire desk's stream.

    .venv/bin/python bench/bench_sensors.py [--messages 20000] [--rounds 3] [--alarms 200] [--from DIR,...]

Starts its own PostgreSQL and Mosquitto, then measures, on the same broker:

(a) throughput: zigbee2mqtt state messages of 50 sensors (5 readings each)
    published as fast as a QoS 1 publisher can, first to a bare paho
    subscriber (on topics the node does not hear), then through an edge node
    and an ingest worker (each its own process, as deployed) until every
    reading is a row; nothing may be lost. ``--rounds`` pairs of the two, the
    share taken as the median pair's: one pair moves by a fifth on 2 shared
    cores;
(b) alarm latency: from a detector's publish of ``smoke: true`` until the
    alert arrives on the fire desk's SSE stream (``patrolnet api``, its own
    process, as deployed), while 1,000 readings per second of background load
    flow, with where the time goes: the alert leaving the node (a tap on the
    uplink), ingest's commit (its confirmation to the node) and the stream.

``--from`` runs the node, ingest and the API from other checkouts too (e.g. the
commit before a change: ``git worktree add``), one after the other against the
same broker and database, each beside a bare subscriber measured just before
it, so before and after are measured alike in one run.

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
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's code, not an installed one

from sensor_load import ALARM_TOPIC, READINGS_PER_MESSAGE, SENSORS, SITE, node_yaml, state, topic  # noqa: E402

from alerts.auth import Principal, create_key  # noqa: E402
from alerts.core.collector import settle_collector  # noqa: E402
from alerts.core.models import Place, Role  # noqa: E402
from alerts.core.mqtt import connect, make_client, parse_url  # noqa: E402
from alerts.core.protocol import confirm_topic, uplink_topic  # noqa: E402
from alerts.store.database import migrate  # noqa: E402
from alerts.store.sites import register  # noqa: E402
from deploy.local.services import free_port, start_mosquitto, start_postgres, wait_for_port  # noqa: E402

log = logging.getLogger(__name__)

BENCH_SITE = Place(**SITE)
GOAL_SHARE = 0.8
GOAL_P99_MS = 20.0
BARE_ROOT = "bench-bare"


def folder(parent: Path, name: str) -> Path:
    # Services run as their own users, so their folders must be reachable by them.
    path = parent / name
    path.mkdir()
    os.chmod(path, 0o755)
    return path


def client(url: str, name: str, stock: bool = False) -> mqtt.Client:
    """A connected MQTT v5 client as the project makes them (``alerts.core.mqtt.Client``); ``stock``: paho's own
    ``Client``, its socket read as paho reads it (it decodes through the tables ``alerts.core.mqtt`` shares, as
    every client of this process does: a baseline, if anything, faster than paho as it comes)."""
    mqtt_client: mqtt.Client
    if stock:
        mqtt_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        address, props = parse_url(url), Properties(PacketTypes.CONNECT)
    else:
        mqtt_client, address, props = make_client(url, name)
    mqtt_client.max_inflight_messages_set(1000)
    connect(mqtt_client, address, props)
    deadline = time.monotonic() + 10
    while not mqtt_client.is_connected():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not connect")
        time.sleep(0.01)
    return mqtt_client


def publish_all(publisher: mqtt.Client, messages: int, root: str = "zigbee2mqtt") -> float:
    """Publishes ``messages`` states round-robin over the sensors, under ``root``; returns when it started."""
    started = time.perf_counter()
    last = None
    for i in range(messages):
        last = publisher.publish(topic(i, root), state(i), qos=1)
    if last is not None:
        last.wait_for_publish(timeout=120)
    return started


def bare_rate(url: str, messages: int) -> float:
    """Messages per second a bare paho subscriber receives of ``messages`` published at full speed, on topics of
    their own (BARE_ROOT) that the node, running meanwhile, does not hear."""
    done, received = threading.Event(), [0, 0.0]

    def on_message(client, userdata, message) -> None:
        received[0] += 1
        if received[0] == messages:
            received[1] = time.perf_counter()
            done.set()

    # paho's client, the baseline issue 18 names; not the project's (alerts.core.mqtt.Client), which reads ahead.
    subscriber = client(url, "bench-bare", stock=True)
    subscriber.on_message = on_message
    subscriber.subscribe(f"{BARE_ROOT}/#", qos=1)
    time.sleep(0.5)
    publisher = client(url, "bench-publisher")
    started = publish_all(publisher, messages, BARE_ROOT)
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
    """Readings per second from publish to committed rows, and how many rows there are (the table emptied first)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
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
                        # Its smoke alarm only: the changing temperatures can raise a rate-of-rise alert too.
                        if alert["place"]["device"] == self._device and alert["type"] == "smoke":
                            self.changes.put((time.perf_counter(), change, alert))
        except httpx.HTTPError as exc:
            # Closing the client, or the server going away at the end, ends the stream.
            log.info("SSE stream ended: %s", exc)

    def wait(self, active: bool, timeout: float = 60.0) -> float:
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
        publisher.publish(topic(i), state(i), qos=1)
        i += 1
        due += period
        time.sleep(max(0.0, due - time.perf_counter()))
    publisher.disconnect()
    publisher.loop_stop()


class Taps:
    """When each raised alarm leaves the node (its alert on the uplink, beside ingest's subscription) and when
    ingest committed it (its confirmation to the node, published after the commit), by the alert's spool entry."""

    def __init__(self, url: str, node_id: str) -> None:
        self.left: queue.Queue[tuple[float, str]] = queue.Queue()
        self.committed: dict[str, float] = {}
        self._lock = threading.Lock()
        self._client = client(url, "bench-taps")
        self._client.on_message = self._on_message
        self._alerts, self._confirms = uplink_topic(BENCH_SITE.site, "alerts"), confirm_topic(BENCH_SITE.site, node_id)
        self._client.subscribe([(self._alerts, 1), (self._confirms, 1)])

    def _on_message(self, client, userdata, message) -> None:
        now = time.perf_counter()
        if message.topic == self._confirms:
            with self._lock:
                self.committed.update(dict.fromkeys(json.loads(message.payload)["ids"], now))
        elif (alert := json.loads(message.payload))["active"] and alert["type"] == "smoke":
            self.left.put((now, message.properties.CorrelationData.decode()))

    def commit_time(self, entry: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if entry in self.committed:
                    return self.committed.pop(entry)
            time.sleep(0.005)
        raise TimeoutError(f"no confirmation of {entry}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


STAGES = ("the alert leaving the edge node", "ingest's commit (confirmed)", "the alert on the fire SSE stream")


def alarm_latencies(
    url: str, api_url: str, key: str, node_id: str, alarms: int, background: float
) -> list[tuple[float, float, float]]:
    """Seconds from the detector's publish to each of STAGES, one triple per alarm."""
    stream = AlarmStream(f"{api_url}/api/v1/alerts/stream", key, "bench-alarm")
    taps = Taps(url, node_id)
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
            left, entry = taps.left.get(timeout=60)
            latencies.append((left - sent, taps.commit_time(entry) - sent, arrived - sent))
            detector.publish(ALARM_TOPIC, state(i, smoke=False), qos=1)
            stream.wait(active=False)
            time.sleep(0.05)
    finally:
        stop.set()
        load.join(timeout=5)
        detector.disconnect()
        detector.loop_stop()
        taps.close()
        stream.close()
    return latencies


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def spawn(args: list[str], env: dict[str, str], source: Path, stack: ExitStack) -> subprocess.Popen:
    """``patrolnet <args>`` from the checkout ``source``, terminated and waited for when ``stack`` closes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", *args], cwd=source, env={**env, "PYTHONPATH": str(source)}
    )
    stack.callback(proc.wait, 30)
    stack.callback(proc.terminate)
    return proc


@dataclass
class Run:
    """What one checkout measured."""

    source: Path
    pairs: list[tuple[float, float]]
    """Each round's bare subscriber and pipeline, readings/s."""
    rows: list[int]
    wall: float
    cpu: dict[str, float]
    latencies: list[tuple[float, float, float]]

    @property
    def share(self) -> float:
        """The pipeline's share of the bare subscriber's readings/s: the median round's."""
        return statistics.median(rate / bare for bare, rate in self.pairs)


def run_checkout(args: argparse.Namespace, source: Path, work: Path) -> Run:
    """The throughput and latency runs with the node, ingest and the API of ``source``, on a broker and a
    database of their own (no session or table left by a run before)."""
    node_id = "bench-node"
    with ExitStack() as pipeline:
        db = pipeline.enter_context(start_postgres(folder(work, "postgres")))
        broker = pipeline.enter_context(start_mosquitto(folder(work, "mosquitto")))
        migrate(db.url)
        register(db.url, BENCH_SITE, node_id)
        config = work / "node.yaml"
        config.write_text(node_yaml(node_id, broker.url, work / "outbox.sqlite3"))
        env = {**os.environ, "PATROLNET_DATABASE_URL": db.url, "PATROLNET_MQTT_URL": broker.url}
        assert broker.proc is not None
        parts = {
            "edge node": spawn(["edge", "run", "--config", str(config)], env, source, pipeline).pid,
            "ingest": spawn(["ingest", "--name", "bench-ingest"], env, source, pipeline).pid,
            "mosquitto": broker.proc.pid,
            "publisher (this process)": os.getpid(),
        }
        wait_for_pipeline(broker.url, db.url)
        pairs, counts, wall, cpu = [], [], 0.0, dict.fromkeys([*parts, "postgresql"], 0.0)
        for _ in range(args.rounds):
            bare = bare_rate(broker.url, args.messages) * READINGS_PER_MESSAGE
            before, started = cpu_by_part(parts, db.folder / "pgdata"), time.perf_counter()
            rate, rows = pipeline_rate(broker.url, db.url, args.messages)
            wall += time.perf_counter() - started
            for name, seconds in cpu_by_part(parts, db.folder / "pgdata").items():
                cpu[name] += seconds - before[name]
            pairs.append((bare, rate))
            counts.append(rows)
        key = create_key(db.url, Principal(name="bench fire desk", role=Role.FIRE))
        port = free_port()
        api = spawn(["api", "--port", str(port), "--no-access-log"], env, source, pipeline)
        wait_for_port(port, 60, api)
        settle_collector()  # this process's own full collections would be counted as the alarm's latency
        latencies = alarm_latencies(broker.url, f"http://127.0.0.1:{port}", key, node_id, args.alarms, args.background)
    return Run(source, pairs, counts, wall, cpu, latencies)


def report(run: Run, args: argparse.Namespace) -> None:
    expected = args.messages * READINGS_PER_MESSAGE
    print(f"\n{run.source}:")
    print(f"  throughput, {args.messages} messages of {READINGS_PER_MESSAGE} readings from {SENSORS} sensors:")
    for i, ((bare, rate), rows) in enumerate(zip(run.pairs, run.rows, strict=True)):
        lost = "nothing lost" if rows == expected else f"LOST {expected - rows}"
        print(f"    round {i + 1}: bare paho subscriber {bare:7.0f} readings/s, broker -> node -> ingest -> PostgreSQL")
        print(f"             {rate:7.0f} readings/s ({rate / bare:.2f} of bare); rows {rows} of {expected}: {lost}")
    print(f"    share of bare, the median round's: {run.share:.2f}")
    print(f"    CPU in the {run.wall:.1f} s of the pipeline's rounds, on {os.cpu_count()} cores:")
    for name, seconds in sorted(run.cpu.items(), key=lambda item: -item[1]):
        share, per_reading = seconds / run.wall, seconds / max(1, sum(run.rows)) * 1e6
        print(f"      {name:<26} {seconds:6.2f} s  {share:4.0%} of a core  {per_reading:5.1f} us/reading")
    load = f"{len(run.latencies)} alarms, {args.background:.0f} readings/s"
    print(f"  alarm latency from the detector's publish ({load}):")
    for i, to in enumerate(STAGES):
        ms = [triple[i] * 1000 for triple in run.latencies]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        print(f"    to {to:<34} p50 {p50:5.1f} ms  p99 {p99:5.1f} ms  max {max(ms):5.1f} ms")


def summary(runs: list[Run]) -> None:
    """The two figures issue 18 sets goals for, one column per checkout."""
    print("\nsummary" + "".join(f"  {run.source.name[-24:]:>24}" for run in runs) + "  goal")
    shares = "".join(f"  {run.share:>24.2f}" for run in runs)
    print(f"  readings, share of bare{shares}  >= {GOAL_SHARE}")
    for q, goal in ((50, ""), (99, f"<= {GOAL_P99_MS:g}")):
        cells = "".join(f"  {percentile([t[2] * 1000 for t in run.latencies], q):>24.1f}" for run in runs)
        print(f"  alarm -> fire desk p{q} ms{cells}  {goal}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="state messages for the throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of bare and pipeline throughput runs")
    parser.add_argument("--alarms", type=int, default=200, help="alarms for the latency run")
    parser.add_argument("--background", type=float, default=1000.0, help="readings/s of load during the alarms")
    parser.add_argument("--from", dest="sources", default=str(REPO), help="checkouts to run, in turn (comma-separated)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sources = [Path(source).resolve() for source in args.sources.split(",")]

    runs = []
    for source in sources:
        work = Path(tempfile.mkdtemp(prefix="patrolnet-bench-"))
        os.chmod(work, 0o755)
        try:
            runs.append(run_checkout(args, source, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        report(run, args)
    summary(runs)
    expected = args.messages * READINGS_PER_MESSAGE
    return 0 if all(rows == expected for run in runs for rows in run.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
