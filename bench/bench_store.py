"""Store and API benchmark (prints figures; not a test).

    .venv/bin/python bench/bench_store.py [--alerts 1000000] [--sections 1,2,3] [--rate 200] [--api-from DIR,...]

On real PostgreSQL and Mosquitto started in temporary folders, it measures:

1. batch writes of 500 readings three ways: psycopg executemany, COPY into a temporary
   table then INSERT ... ON CONFLICT, and the store's INSERT ... SELECT FROM unnest(arrays);
2. ingest end to end: rows/s from MQTT publish to committed rows, one ``patrolnet ingest``
   process, next to the rate a bare paho subscriber receives the same messages;
3. the alert list route and the CAP feed with ``--alerts`` alerts stored (bulk-loaded with
   generate_series), ``--clients`` concurrent clients paced at ``--rate`` requests/s and flat out,
   with one and two API processes: p50/p99 latency and requests/s, next to the list's SQL run
   directly (the database's share) and ``/healthz`` (the HTTP stack's share). ``--api-from`` runs
   the API from other checkouts too (e.g. the commit before a change: ``git worktree add``), one
   after the other against the same database, so before and after are measured alike.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from alerts.auth import Principal, create_key  # noqa: E402
from alerts.core.models import Place, Reading, Role  # noqa: E402
from alerts.core.mqtt import connect, make_client  # noqa: E402
from alerts.core.protocol import encode, uplink_topic  # noqa: E402
from alerts.store.alert_queries import page_sql  # noqa: E402
from alerts.store.database import READING_COLUMNS, copy_insert, migrate, reading_row  # noqa: E402
from alerts.store.queries import AlertPage  # noqa: E402
from alerts.store.rows import ALERT_COLUMNS  # noqa: E402
from alerts.store.schema import READINGS  # noqa: E402
from alerts.store.sites import register  # noqa: E402
from deploy.local.services import free_port, start_mosquitto, start_postgres, wait_for_port  # noqa: E402

log = logging.getLogger(__name__)

PLACE = Place(sub_district="sd-1", community="c-1", grid="g-1", site="s-1", device="smoke-1")


def folder(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


def count_readings(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return int(row[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# 1. Batch write strategies ---------------------------------------------------------------------


def write_executemany(conn: psycopg.Connection, rows: list[tuple]) -> None:
    columns = ", ".join(READING_COLUMNS)
    values = ", ".join(["%s"] * len(READING_COLUMNS))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO readings ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING", rows)


def write_unnest(conn: psycopg.Connection, rows: list[tuple]) -> None:
    types = ("uuid", "timestamptz", "text", "text", "text", "text", "text", "text", "float8", "text")
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    with conn.cursor() as cur:
        columns = ", ".join(READING_COLUMNS)
        sql = f"INSERT INTO readings ({columns}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        cur.execute(sql, [list(c) for c in zip(*rows, strict=True)])


def write_copy(conn: psycopg.Connection, rows: list[tuple]) -> None:
    with conn.cursor() as cur:
        copy_insert(cur, "readings", READINGS.written, rows)


def bench_write_strategies(url: str, batches: int = 40, size: int = 500) -> dict[str, float]:
    results = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, write in (
            ("executemany", write_executemany),
            ("COPY + INSERT (store)", write_copy),
            ("unnest INSERT", write_unnest),
        ):
            conn.execute("TRUNCATE readings")
            data = [
                [reading_row(Reading(place=PLACE, quantity="t", value=i)) for i in range(size)] for _ in range(batches)
            ]
            start = time.perf_counter()
            for rows in data:
                with conn.transaction():
                    write(conn, rows)
            results[name] = batches * size / (time.perf_counter() - start)
            assert count_readings(conn) == batches * size
        conn.execute("TRUNCATE readings")
    return results


# 2. Ingest end to end ----------------------------------------------------------------------------


def payloads(messages: int, per_message: int) -> list[bytes]:
    return [
        encode("readings", [Reading(place=PLACE, quantity=f"q{j}", value=float(i)) for j in range(per_message)])
        for i in range(messages)
    ]


def publish_all(broker_url: str, bodies: list[bytes]) -> None:
    client, address, props = make_client(broker_url, f"bench-pub-{uuid4().hex[:6]}")
    client.max_inflight_messages_set(1000)
    connect(client, address, props)
    while not client.is_connected():
        time.sleep(0.01)
    topic = uplink_topic(PLACE.site, "readings")
    pending = []
    for body in bodies:
        pending.append(client.publish(topic, body, qos=1))
        if len(pending) >= 1000:
            pending.pop(0).wait_for_publish(10)
    for info in pending:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def bare_subscriber_rate(broker_url: str, bodies: list[bytes]) -> float:
    got, done = [0], threading.Event()
    client, address, props = make_client(broker_url, "bench-bare-sub")

    def on_message(c, userdata, message) -> None:
        got[0] += 1
        if got[0] == len(bodies):
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(f"{uplink_topic(PLACE.site, 'readings')}", qos=1)
    connect(client, address, props)
    time.sleep(0.5)
    start = time.perf_counter()
    publish_all(broker_url, bodies)
    done.wait(120)
    rate = got[0] / (time.perf_counter() - start)
    client.disconnect()
    client.loop_stop()
    return rate


def bench_ingest(url: str, broker_url: str, messages: int, per_message: int) -> tuple[float, float]:
    bodies = payloads(messages, per_message)
    bare = bare_subscriber_rate(broker_url, bodies) * per_message
    env = {**os.environ, "PATROLNET_DATABASE_URL": url, "PATROLNET_MQTT_URL": broker_url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "ingest", "--name", "bench"], cwd=REPO, env=env, stderr=subprocess.DEVNULL
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            time.sleep(3)  # the worker starts and subscribes
            conn.execute("TRUNCATE readings")
            start = time.perf_counter()
            publish_all(broker_url, bodies)
            total = messages * per_message
            while count_readings(conn) < total:
                time.sleep(0.05)
            return total / (time.perf_counter() - start), bare
    finally:
        worker.terminate()
        worker.wait(10)


# 3. The list route with many alerts --------------------------------------------------------------

# A year of history as desks leave it: the newest 500 alerts new (each starting its escalation, as ingest's would),
# the next 500 acknowledged, the rest resolved. Never-answered history would keep every API process's escalation
# runner escalating a year of alarms during the measurement.
BULK_ALERTS = """
INSERT INTO alerts (id, ts, kind, type, severity, route, sub_district, community, grid, site, device, source, title,
                    dedup_key, active, count, last_seen, revision, readings, status, status_at)
SELECT gen_random_uuid(), t, k, 'bench', (ARRAY['info', 'minor', 'major', 'critical'])[1 + (i / 7) %% 4],
       CASE k WHEN 'fire' THEN 'fire' WHEN 'trouble' THEN 'operator' ELSE 'police' END,
       'sd-' || i %% 5, 'c-' || i %% 20, 'g-' || i %% 40, 's-' || i %% 200, 'd-' || i %% 1000, 'node-' || i %% 200,
       'Bench alert ' || i, 'k' || i, i %% 10 = 0, 1 + i %% 5, t, 1,
       '{"smoke": 1.0, "battery": 87}'::jsonb,
       CASE WHEN i <= 500 THEN 'new' WHEN i <= 1000 THEN 'acknowledged' ELSE 'resolved' END,
       CASE WHEN i > 500 THEN t + interval '5 minutes' END
FROM generate_series(1, %s) i,
     LATERAL (SELECT now() - i * interval '30 seconds' AS t,
                     (ARRAY['security', 'fire', 'trouble', 'report'])[1 + (i / 3) %% 4] AS k) x"""


def bulk_load(url: str, count: int) -> float:
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BULK_ALERTS, (count,))
        conn.execute("VACUUM ANALYZE alerts")
    return time.perf_counter() - start


QUERIES: list[tuple[str, dict, dict]] = [
    # (key role and scope, list parameters) as desks use it: newest first, by place and kind
    ("admin", {}, {}),
    ("fire", {}, {}),
    ("fire", {"community": "c-3"}, {}),
    ("police", {"community": "c-7"}, {}),
    ("operator", {}, {"active": "true"}),
    ("police", {}, {"site": "s-42"}),
    ("admin", {}, {"severity": ["critical"], "community": "c-11"}),
]


def run_clients(
    clients: int, seconds: float, request: Callable[[httpx.Client, int], httpx.Response], after=None, pace: float = 0
) -> list[float]:
    """``clients`` threads sending requests for ``seconds``, each ``pace`` seconds apart (0: back to back);
    the latency of each, to its whole response."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop(n: int) -> None:
        mine = []
        due = time.monotonic() + pace * n / clients  # spread the clients over one pace interval
        with httpx.Client(timeout=10) as client:
            i = n
            while time.monotonic() < stop:
                due += pace
                time.sleep(max(0.0, due - time.monotonic()))
                start = time.perf_counter()
                response = request(client, i)
                mine.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                if after is not None:
                    after(response, i)
                i += clients
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def client_process(
    base: str, keys: dict, path: str, threads: int, seconds: float, limit: int, first: int, pace: float
) -> list[float]:
    """One client process (threads of one Python process would queue on its GIL and add to the latency)."""
    cursors: dict[int, str] = {}

    def request(client: httpx.Client, i: int) -> httpx.Response:
        i += first
        role, scope, params = QUERIES[i % len(QUERIES)]
        # Every third request pages on from the first page of the same query.
        extra = {"cursor": cursors[i % len(QUERIES)]} if i % 3 == 2 and i % len(QUERIES) in cursors else {}
        headers = keys[f"{role} {scope}"]
        return client.get(f"{base}{path}", headers=headers, params={**params, **extra, "limit": limit})

    def keep_cursor(response: httpx.Response, i: int) -> None:
        if (i + first) % len(QUERIES) not in cursors and (cursor := response.json()["next_cursor"]):
            cursors[(i + first) % len(QUERIES)] = cursor

    after = keep_cursor if path == LIST else None  # the CAP feed has no cursor of its own: first pages only
    if path == "/healthz":
        return run_clients(threads, seconds, lambda c, i: c.get(f"{base}/healthz"), pace=pace)
    return run_clients(threads, seconds, request, after, pace)


LIST, CAP = "/api/v1/alerts", "/api/v1/alerts.cap"


@dataclass(frozen=True)
class Load:
    """One measurement: a route, API worker processes, and the requests/s of all clients (0: flat out)."""

    name: str
    path: str
    workers: int
    rate: float


def loads(rate: float) -> list[Load]:
    """What section 3 measures, grouped by the API processes serving it."""
    return [
        Load("/healthz (HTTP stack)", "/healthz", 1, rate),
        Load(f"list route, {rate:.0f}/s", LIST, 1, rate),
        Load("list route, flat out", LIST, 1, 0),
        Load(f"CAP feed, {rate:.0f}/s", CAP, 1, rate),
        Load("CAP feed, flat out", CAP, 1, 0),
        Load("list route, flat out", LIST, 2, 0),
        Load("CAP feed, flat out", CAP, 2, 0),
    ]


def api_keys(url: str) -> dict[str, dict[str, str]]:
    keys = {}
    for role, scope, _ in QUERIES:
        name = f"{role} {scope}"
        if name not in keys:
            keys[name] = {"Authorization": f"Bearer {create_key(url, Principal(name=name, role=Role(role), **scope))}"}
    return keys


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its children still running, from /proc."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextmanager
def api_server(url: str, workers: int, source: Path) -> Iterator[tuple[int, str]]:
    """``patrolnet api`` from the checkout ``source`` with ``workers`` processes; its process id and base URL."""
    port = free_port()
    env = {**os.environ, "PATROLNET_DATABASE_URL": url, "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "deploy.cli", "api", "--port", str(port), "--workers", str(workers)]
    command.append("--no-access-log")
    api = subprocess.Popen(command, cwd=source, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60, api)
        time.sleep(1 + workers)  # every worker has started
        yield api.pid, f"http://127.0.0.1:{port}"
    finally:
        api.terminate()
        api.wait(10)


def measure(base: str, keys: dict, load: Load, clients: int, procs: int, seconds: float, limit: int) -> list[float]:
    pace = clients / load.rate if load.rate else 0.0
    jobs = [(base, keys, load.path, clients // procs, seconds, limit, n, pace) for n in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return [latency for got in pool.starmap(client_process, jobs) for latency in got]


def sql_latencies(url: str, limit: int, rounds: int = 300) -> list[float]:
    """The list route's query run directly (as its model reader selects it), to tell the database's share."""
    latencies = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(rounds):
            role, scope, params = QUERIES[i % len(QUERIES)]
            who = Principal(name="b", role=Role(role), **scope)
            sql, args = page_sql(ALERT_COLUMNS, AlertPage(**params, limit=limit), who, None)
            start = time.perf_counter()
            conn.execute(sql, args).fetchall()
            latencies.append(time.perf_counter() - start)
    return latencies


def print_line(
    name: str, workers: int, values: list[float], seconds: float | None, cpu: float = 0, goal: str = ""
) -> None:
    """p50, p99, requests/s and the API's CPU per request: that one does not grow when others share the machine."""
    p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
    served = f"{len(values) / seconds:>6,.0f} req/s" if seconds else " " * 12
    per_request = f"{cpu / len(values) * 1000:5.2f} ms" if cpu else " " * 8
    print(f"   {name:<24} {workers:>5}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {served}  {per_request}  {goal}")


def bench_api(args: argparse.Namespace, url: str, keys: dict, source: Path) -> None:
    load_before = os.getloadavg()[0]
    print(f"   {'':<24} {'procs':>5}  {'latency':<31} {'served':<12}  API CPU/req")
    print_line("SQL alone (1 client)", 0, sql_latencies(url, args.limit), None, 0, "the database's share")
    for workers in sorted({load.workers for load in loads(args.rate)}):
        with api_server(url, workers, source) as (pid, base):
            for load in loads(args.rate):
                if load.workers == workers:
                    measure(base, keys, load, args.clients, args.client_procs, 2, args.limit)  # warm pools, caches
                    cpu = cpu_seconds(pid)
                    latencies = measure(base, keys, load, args.clients, args.client_procs, args.seconds, args.limit)
                    cpu = cpu_seconds(pid) - cpu
                    goal = GOALS.get((load.path, workers, load.rate > 0), "")
                    print_line(load.name, workers, latencies, args.seconds, cpu, goal)
    after = os.getloadavg()[0]
    print(f"   load average (1 min) before / after: {load_before:.1f} / {after:.1f} on {os.cpu_count()} cores")


GOALS = {(LIST, 1, True): "goal: p99 <= 20 ms", (LIST, 2, False): "goal: >= 500 req/s"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1_000_000, help="alerts stored for the API benchmark")
    parser.add_argument("--messages", type=int, default=20_000, help="MQTT messages for the ingest benchmark")
    parser.add_argument("--per-message", type=int, default=5, help="readings per message")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--seconds", type=float, default=15, help="how long the clients run, per line")
    parser.add_argument("--limit", type=int, default=50, help="alerts per page")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--rate", type=float, default=200, help="requests/s of all clients together, when paced")
    parser.add_argument("--sections", default="1,2,3", help="which to run: 1 writes, 2 ingest, 3 API")
    parser.add_argument("--api-from", default=str(REPO), help="checkouts the API runs from, in turn (comma-separated)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    logging.basicConfig(level=logging.WARNING)
    random.seed(1)
    with ExitStack() as stack:
        db = stack.enter_context(start_postgres(folder("bench-pg-")))
        migrate(db.url)
        register(db.url, PLACE)  # ingest takes only what a registered site sends
        print(f"cores: {os.cpu_count()}; PostgreSQL and Mosquitto on loopback, fsync off\n")

        if "1" in sections:
            print("1. writing batches of 500 readings (rows/s):")
            for name, rate in bench_write_strategies(db.url).items():
                print(f"   {name:<22} {rate:>10,.0f}")

        if "2" in sections:
            broker = stack.enter_context(start_mosquitto(folder("bench-mqtt-")))
            print(f"\n2. ingest end to end, {args.messages:,} MQTT messages of {args.per_message} readings:")
            rate, bare = bench_ingest(db.url, broker.url, args.messages, args.per_message)
            print(f"   MQTT -> patrolnet ingest -> PostgreSQL  {rate:>10,.0f} rows/s")
            share = f"(ingest at {rate / bare:.2f} of it)"
            print(f"   bare paho subscriber, same messages     {bare:>10,.0f} rows/s   {share}")

        if "3" in sections:
            print(f"\n3. the API over {args.alerts:,} alerts, {args.clients} clients, {args.limit} per page:")
            print(f"   bulk load: {bulk_load(db.url, args.alerts):.1f} s")
            keys = api_keys(db.url)
            for source in args.api_from.split(","):
                print(f"   API from {source}:")
                bench_api(args, db.url, keys, Path(source).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
