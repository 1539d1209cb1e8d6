"""Living ingest workers take over the session of a dead one: its share of the uplink is stored, not stranded.

Mosquitto keeps handing a shared subscription's messages to a disconnected persistent session until the session
expires (a day, ``SESSION_EXPIRY_S``), so with three workers and one dead, a third of the uplink waits for it; a
node sends again what stays unconfirmed, but each copy is stranded again a third of the time. Every worker
therefore looks, every ``check_s``, for a worker whose liveness row (``ingest_workers``, refreshed every second by
its watchdog) is older than ``stale_after_s``, and drains its session as ``patrolnet ingest --drain NAME`` does:
it connects under the dead worker's client id, leaves the share group, stores what the session holds and ends
the session, so the broker routes the uplink to the living only. The row is then marked ``drained_by`` (the
dead worker's own next report, should it come back, clears the mark) and kept, so that the metrics still show
a worker gone.

Only a worker that has itself reached the database without a failure for longer than ``stale_after_s`` judges
others: after the database was away, every row is old and the workers would drain each other. One advisory
lock per dead worker makes one taker; ``patrolnet ingest --drain`` takes the same lock.

Example:
    >>> drain_lock_key("w2") == drain_lock_key("w2") != drain_lock_key("w3")
    True
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

import psycopg

from alerts.intake.writer import IngestWorker

log = logging.getLogger(__name__)

STALE_AFTER_S = 10.0
"""A worker's liveness row this old means it is gone: it reports every second while it runs."""

_STALE = """
SELECT name FROM ingest_workers
WHERE name <> %s AND seen_at < now() - make_interval(secs => %s) AND NOT counters ? 'drained_by'
ORDER BY name"""
_MARK = """
UPDATE ingest_workers SET counters = counters || jsonb_build_object('drained_by', %s::text)
WHERE name = %s AND seen_at < now() - make_interval(secs => %s)"""


def drain_lock_key(name: str) -> int:
    """The advisory lock that makes one drainer of worker ``name``'s session at a time."""
    return int.from_bytes(hashlib.sha256(f"ingest-drain/{name}".encode()).digest()[:8], "big", signed=True)


def drain(mqtt_url: str, database_url: str, conn: psycopg.Connection, name: str, wait: bool = True) -> bool | None:
    """Stores what waits in worker ``name``'s session and ends it, holding its drain lock on ``conn`` (an
    autocommit connection to ``database_url``); None when another holds the lock and ``wait`` is False, else
    whether it drained."""
    key = drain_lock_key(name)
    if wait:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    elif not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
        return None
    try:
        worker = IngestWorker(mqtt_url, database_url, name=name, draining=True)
        worker.start()
        return worker.drain(timeout=600.0)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


class Takeover:
    """Drains the sessions of dead workers, from a thread of a living one (``name``)."""

    def __init__(
        self,
        mqtt_url: str,
        database_url: str,
        name: str,
        stale_after_s: float = STALE_AFTER_S,
        check_s: float = 2.0,
    ) -> None:
        self.mqtt_url = mqtt_url
        self.database_url = database_url
        self.name = name
        self.stale_after_s = stale_after_s
        self.check_s = check_s
        self.drained: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-takeover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def alive(self) -> bool:
        return self._thread.is_alive() or self._stop.is_set()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        watching_since = time.monotonic()
        while not self._stop.wait(self.check_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                if time.monotonic() - watching_since > self.stale_after_s:
                    self._take_over(conn)
            except psycopg.Error as exc:
                log.warning("%s takeover: database away: %s", self.name, exc)
                if conn is not None:
                    conn.close()
                conn = None
                watching_since = time.monotonic()
            except Exception:  # a failed drain must not end the watch for dead workers
                log.exception("%s takeover round failed; next in %.0f s", self.name, self.check_s)
        if conn is not None:
            conn.close()

    def _take_over(self, conn: psycopg.Connection) -> None:
        for (dead,) in conn.execute(_STALE, (self.name, self.stale_after_s)).fetchall():
            if self._stop.is_set():
                return
            log.warning("%s: worker %s silent for over %.0f s; draining its session", self.name, dead,
                        self.stale_after_s)  # fmt: skip
            if drain(self.mqtt_url, self.database_url, conn, dead, wait=False):
                conn.execute(_MARK, (self.name, dead, self.stale_after_s))
                self.drained.append(dead)
                log.warning("%s: took over worker %s: its share is stored and its session ended", self.name, dead)
