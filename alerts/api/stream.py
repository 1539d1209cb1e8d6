"""The live alert stream: Server-Sent Events over the ``alert_changes`` log.

Each SSE message carries the change's sequence number as its ``id``, so a
client that reconnects with ``Last-Event-ID`` gets exactly the changes it
missed. One LISTEN connection per API process wakes every open stream when
ingest commits a change; a slow poll covers a lost notification. Every API
replica follows the same log, so a client may reconnect to any of them.

A stream asks at every wake-up whether its key or session still works (an
answer cached for the key cache time), and ends when it does not: a revoked key
stops receiving alerts within a few seconds. When a session ends anywhere
(sign-out, an admin ending it, its person disabled), ``NOTIFY sessions_ended``
drops every process's cached sessions and wakes every stream, so the stream of
an ended session closes at once. A stream whose database goes away ends
too; the client reconnects with its Last-Event-ID and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from alerts.auth import Principal
from alerts.store.database import CHANGES_CHANNEL
from alerts.store.people import SESSIONS_CHANNEL
from alerts.store.queries import AlertFilter, where
from alerts.store.rows import ALERT_JSON

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
POLL_S = 2.0


class ChangeNotifier:
    """Wakes waiting streams whenever ``NOTIFY alert_changes`` arrives, and when ``NOTIFY sessions_ended`` does,
    first calls ``sessions_ended`` (which drops the cached sessions)."""

    def __init__(self, conninfo: str, sessions_ended: Callable[[], None] = lambda: None) -> None:
        self.conninfo = conninfo
        self.sessions_ended = sessions_ended
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def armed(self) -> asyncio.Event:
        """What the next change sets. Taken before a stream reads the log, so that a change committed while it
        reads wakes it at once (a later one would poll it up to ``POLL_S`` late)."""
        return self._changed

    @staticmethod
    async def wait(changed: asyncio.Event, timeout: float) -> None:
        """Returns once ``changed`` (from ``armed``) is set, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def _wake_all(self) -> None:
        # Waiters hold the old event; a fresh one is armed for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    await conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
                    self.sessions_ended()  # sessions may have ended while no one listened
                    async for notify in conn.notifies():
                        if notify.channel == SESSIONS_CHANNEL:
                            self.sessions_ended()
                        self._wake_all()
            except psycopg.OperationalError as exc:
                log.warning("change listener lost the database, retrying: %s", exc)
                await asyncio.sleep(1.0)


async def latest_seq(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT coalesce(max(seq), 0) FROM alert_changes")).fetchone()
    return row[0] if row else 0  # an aggregate always answers one row


async def sse_events(
    pool: AsyncConnectionPool,
    notifier: ChangeNotifier,
    flt: AlertFilter,
    who: Principal,
    after: int,
    key_valid: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """SSE text for every change after ``after`` that the caller may see, until its key or session stops working."""
    clause, params = where(flt, who)
    sql = (
        f"SELECT c.seq, c.change, {ALERT_JSON} FROM alert_changes c JOIN alerts a ON a.id = c.alert_id"
        f" WHERE c.seq > %s AND {clause} ORDER BY c.seq LIMIT 200"
    )
    # Tell the client how long to wait before reconnecting, then catch up, then follow.
    yield "retry: 2000\n\n"
    last_sent = time.monotonic()
    while True:
        changed = notifier.armed()
        try:
            if not await key_valid():
                log.info("stream of %s closed: its key or session no longer works", who.name)
                yield ": key revoked or signed out\n\n"
                return
            async with pool.connection() as conn:
                rows = await (await conn.execute(sql, [after, *params])).fetchall()
        except psycopg.Error as exc:
            log.warning("stream of %s closed: %s", who.name, exc)
            return
        # Each alert's JSON as the database writes it (ALERT_JSON, as the list route serves it): no model per change.
        for seq, change, alert in rows:
            after = seq
            yield f"id: {seq}\nevent: {change}\ndata: {alert}\n\n"
        if len(rows) == 200:
            continue
        if rows:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= KEEPALIVE_S:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        await notifier.wait(changed, POLL_S)
