"""Store and API benchmark (prints figures; not a test).

    .venv/bin/python bench/bench_store.py [--alerts 1000000] [--messages 20000] [--clients 8] [--seconds 20]

On real PostgreSQL and Mosquitto started in temporary folders, it measures:

1. batch writes of 500 readings three ways: psycopg executemany, COPY into a temporary
   table then INSERT ... ON CONFLICT, and the store's INSERT ... SELECT FROM unnest(arrays);
2. ingest end to end: rows/s from MQTT publish to committed rows, one ``patrolnet ingest``
   process, next to the rate a bare paho subscriber receives the same messages;
3. the alert list route with ``--alerts`` alerts stored (bulk-loaded with generate_series),
   under ``--clients`` concurrent clients: p50/p99 latency, next to the same SQL run
   directly (the database's share) and ``/healthz`` (the HTTP stack's share).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
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
from alerts.store.database import READING_COLUMNS, copy_insert, migrate, reading_row  # noqa: E402
from alerts.store.rows import ALERT_COLUMNS  # noqa: E402
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
        copy_insert(cur, "readings", READING_COLUMNS, rows)


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

BULK_ALERTS = """
INSERT INTO alerts (id, ts, kind, type, severity, route, sub_district, community, grid, site, device, source, title,
                    dedup_key, active, count, last_seen, revision, readings, status)
SELECT gen_random_uuid(), t, k, 'bench', (ARRAY['info', 'minor', 'major', 'critical'])[1 + (i / 7) %% 4],
       CASE k WHEN 'fire' THEN 'fire' WHEN 'trouble' THEN 'operator' ELSE 'police' END,
       'sd-' || i %% 5, 'c-' || i %% 20, 'g-' || i %% 40, 's-' || i %% 200, 'd-' || i %% 1000, 'node-' || i %% 200,
       'Bench alert ' || i, 'k' || i, i %% 10 = 0, 1 + i %% 5, t, 1,
       '{"smoke": 1.0, "battery": 87}'::jsonb, 'new'
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


def client_process(base: str, keys: dict, threads: int, seconds: float, limit: int, first: int, pace: float) -> dict:
    """One client process (threads of one Python process would queue on its GIL and add to the latency)."""
    cursors: dict[int, str] = {}

    def list_request(client: httpx.Client, i: int) -> httpx.Response:
        i += first
        role, scope, params = QUERIES[i % len(QUERIES)]
        # Every third request pages on from the first page of the same query.
        extra = {"cursor": cursors[i % len(QUERIES)]} if i % 3 == 2 and i % len(QUERIES) in cursors else {}
        headers = keys[f"{role} {scope}"]
        return client.get(f"{base}/api/v1/alerts", headers=headers, params={**params, **extra, "limit": limit})

    def keep_cursor(response: httpx.Response, i: int) -> None:
        if (i + first) % len(QUERIES) not in cursors and (cursor := response.json()["next_cursor"]):
            cursors[(i + first) % len(QUERIES)] = cursor

    run_clients(threads, 2, list_request, keep_cursor)  # warm up the pools and caches
    return {
        "list route": run_clients(threads, seconds, list_request, keep_cursor, pace),
        "/healthz": run_clients(threads, seconds / 2, lambda c, i: c.get(f"{base}/healthz"), pace=pace),
    }


def bench_list(
    url: str, clients: int, procs: int, seconds: float, limit: int, workers: int, rate: float
) -> dict[str, list[float]]:
    keys = {}
    for role, scope, _ in QUERIES:
        name = f"{role} {scope}"
        if name not in keys:
            keys[name] = {"Authorization": f"Bearer {create_key(url, Principal(name=name, role=Role(role), **scope))}"}
    port = free_port()
    env = {**os.environ, "PATROLNET_DATABASE_URL": url}
    command = ["api", "--port", str(port), "--workers", str(workers), "--no-access-log"]
    api = subprocess.Popen([sys.executable, "-m", "deploy.cli", *command], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[float]] = {"list route": [], "/healthz": []}
    try:
        wait_for_port(port, 60, api)
        time.sleep(1)
        pace = clients / rate if rate else 0.0
        jobs = [(base, keys, clients // procs, seconds, limit, n, pace) for n in range(procs)]
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for got in pool.starmap(client_process, jobs):
                for name, values in got.items():
                    results[name] += values
    finally:
        api.terminate()
        api.wait(10)
    results["SQL alone (1 client)"] = sql_latencies(url, limit)
    return results


def sql_latencies(url: str, limit: int, rounds: int = 300) -> list[float]:
    """The list route's queries run directly, to tell the database's share of the latency."""
    from alerts.store.queries import AlertPage, where

    latencies = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(rounds):
            role, scope, params = QUERIES[i % len(QUERIES)]
            clause, args = where(AlertPage(**params, limit=limit), Principal(name="b", role=Role(role), **scope))
            sql = f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE {clause} ORDER BY a.ts DESC, a.id DESC LIMIT %s"
            start = time.perf_counter()
            conn.execute(sql, [*args, limit + 1]).fetchall()
            latencies.append(time.perf_counter() - start)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=1_000_000, help="alerts stored for the list benchmark")
    parser.add_argument("--messages", type=int, default=20_000, help="MQTT messages for the ingest benchmark")
    parser.add_argument("--per-message", type=int, default=5, help="readings per message")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--seconds", type=float, default=20, help="how long the clients run")
    parser.add_argument("--limit", type=int, default=50, help="alerts per page")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--rate", type=float, default=0, help="requests/s of all clients together (0: flat out)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    random.seed(1)
    with ExitStack() as stack:
        db = stack.enter_context(start_postgres(folder("bench-pg-")))
        broker = stack.enter_context(start_mosquitto(folder("bench-mqtt-")))
        migrate(db.url)
        register(db.url, PLACE)  # ingest takes only what a registered site sends
        print(f"cores: {os.cpu_count()}; PostgreSQL and Mosquitto on loopback, fsync off\n")

        print("1. writing batches of 500 readings (rows/s):")
        for name, rate in bench_write_strategies(db.url).items():
            print(f"   {name:<22} {rate:>10,.0f}")

        print(f"\n2. ingest end to end, {args.messages:,} MQTT messages of {args.per_message} readings:")
        rate, bare = bench_ingest(db.url, broker.url, args.messages, args.per_message)
        print(f"   MQTT -> patrolnet ingest -> PostgreSQL  {rate:>10,.0f} rows/s")
        print(f"   bare paho subscriber, same messages     {bare:>10,.0f} rows/s   (ingest at {rate / bare:.2f} of it)")

        load = f"{args.rate:.0f} requests/s" if args.rate else "flat out"
        print(f"\n3. list route, {args.alerts:,} alerts, {args.clients} clients {load}, {args.limit} per page:")
        print(f"   bulk load: {bulk_load(db.url, args.alerts):.1f} s")
        results = bench_list(db.url, args.clients, args.client_procs, args.seconds, args.limit, args.workers, args.rate)
        base = statistics.median(results["SQL alone (1 client)"])
        for name, values in results.items():
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            served = f"{len(values) / args.seconds:>6,.0f} req/s" if name == "list route" else " " * 12
            print(f"   {name:<22} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {served}  p50 = {p50 / base / 1000:5.1f} x SQL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
