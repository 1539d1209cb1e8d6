"""The edge outbox: a local SQLite spool drained to the uplink broker at QoS 1.

A message is written to disk before anything is sent and deleted only when the
broker's PUBACK says someone will receive it, so a dropped uplink, a broker
restart or a node crash loses nothing; it may send a message twice, which the
central ingest absorbs because every insert is idempotent by UUID. Mosquitto
answers reason 16 ("no matching subscribers") when no ingest worker is
subscribed, a success code under which it drops the message: that, and every
failure code, keeps the message, and the uplink sends it again from there
after a backoff (1 s doubling to 30 s; a delivered message resets it).

Nothing a message holds stops the uplink: one paho refuses to publish (a bad
topic, an oversized payload) is replaced in the spool by a dead letter saying
why, and an error in a callback is logged, not raised into paho's thread. The number of
unacknowledged messages is bounded, since paho runs out of message ids at
65,535 and an unbounded window only fills the broker's queue.

The spool's SQLite file is the node's one file on disk (WAL, every commit
synced): other tables live in it too (``edge.state``), and
``Spool.transaction()`` makes messages and such writes one transaction, so a
node killed at any moment has both or neither. A put or any write through the
spool on the thread of an open transaction joins it. Every commit that spooled
a message wakes the uplink (``Uplink.notify``), after the commit and outside
the spool's lock.

Example:
    >>> import tempfile, pathlib
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3")
    >>> spool.put("patrolnet/v1/s/events", b"{}")
    1
    >>> try:
    ...     with spool.transaction():
    ...         seq = spool.put("patrolnet/v1/s/alerts", b"{}")
    ...         raise RuntimeError("killed")
    ... except RuntimeError:
    ...     pass
    >>> spool.pending()
    1
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from alerts.core.models import DEAD_LETTER_KEEPS, DeadLetter
from alerts.core.mqtt import connect, make_client
from alerts.core.protocol import encode, parse_uplink_topic, uplink_topic

log = logging.getLogger(__name__)


class Spool:
    """A durable FIFO of (topic, payload) messages, in the node's SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Reentrant: a put inside a transaction on the same thread joins it.
        self._lock = threading.RLock()
        self._depth = 0
        self._spooled = False
        self._on_put: list[Callable[[], None]] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
                " payload BLOB NOT NULL)"
            )

    def on_put(self, wake: Callable[[], None]) -> None:
        """Calls ``wake`` after every commit that spooled a message, holding no lock."""
        self._on_put.append(wake)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the node's SQLite file, synced at its commit; the connection to write through.

        Nested on one thread, the inner ones join the outermost, which alone commits; an exception out of
        the outermost rolls back everything written in it. Other threads wait for the spool until it ends.
        sqlite3.OperationalError when the file stays locked (5 s).
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth, self._spooled = 1, False
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            spooled = self._spooled
        if spooled:
            for wake in self._on_put:
                wake()

    def put(self, topic: str, payload: bytes) -> int:
        """Spools a message (in the open transaction of this thread, if any); its sequence number."""
        with self.transaction() as db:
            self._spooled = True
            seq = db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)).lastrowid
        assert seq is not None, "an INSERT has a rowid"
        return seq

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def replace(self, seq: int, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET topic = ?, payload = ? WHERE seq = ?", (topic, payload, seq))

    def delete(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


DELIVERED = 0
"""The only PUBACK reason code that means someone will receive the message."""
MAX_BACKOFF_S = 30.0


def delivered(reason_code: ReasonCode | int) -> bool:
    """Whether a PUBACK's reason code says the message reached a subscriber.

    >>> from paho.mqtt.packettypes import PacketTypes
    >>> [delivered(ReasonCode(PacketTypes.PUBACK, identifier=code)) for code in (0, 16, 128)]
    [True, False, False]
    """
    code = reason_code.value if isinstance(reason_code, ReasonCode) else reason_code
    return code == DELIVERED


STATUS_SEQ = 0
"""The in-flight entry of the online status: spool sequence numbers start at 1."""


class Uplink:
    """Drains a Spool to an MQTT broker in order, with a bounded in-flight window."""

    def __init__(
        self,
        spool: Spool,
        url: str,
        client_id: str,
        max_inflight: int = 100,
        status_topic: str | None = None,
        online: bytes = b"",
        offline: bytes = b"",
    ) -> None:
        """With ``status_topic``, ``offline`` is the client's last will (retained, QoS 1) and ``online`` is
        published there, retained, on every (re)connect."""
        self.spool = spool
        self.max_inflight = max_inflight
        self.acked = 0
        self.refused = 0
        self._inflight: dict[int, int] = {}
        self._early_acks: dict[int, ReasonCode] = {}
        self._cursor = 0
        # The oldest refused message, sent again once the backoff has passed.
        self._retry_from: int | None = None
        self._backoff_s = 0.0
        self._resume_at = 0.0
        self._wake = threading.Condition()
        self._stopping = False
        self._connected = False
        self._client, self._address, self._props = make_client(url, client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.suppress_exceptions = True
        self._status = (status_topic, online) if status_topic else None
        if status_topic:
            self._client.will_set(status_topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        spool.on_put(self.notify)

    def start(self) -> None:
        connect(self._client, self._address, self._props)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def send(self, topic: str, payload: bytes) -> None:
        """Spools a message; it goes out as soon as the broker can take it (once committed, in a transaction)."""
        self.spool.put(topic, payload)

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()

    def notify(self) -> None:
        """Wakes the uplink to look at the spool: something was committed to it."""
        with self._wake:
            self._wake.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("uplink %s:%s refused the connection: %s", self._address.host, self._address.port, reason_code)
            return
        log.info("uplink connected to %s:%s", self._address.host, self._address.port)
        if self._status:
            info = client.publish(*self._status, qos=1, retain=True)
            with self._wake:
                # It cannot be acknowledged before this returns: paho's callbacks run on this thread.
                self._inflight[info.mid] = STATUS_SEQ
        with self._wake:
            self._connected = True
            self._wake.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # paho keeps the unacknowledged messages and sends them again after it reconnects.
        log.warning("uplink disconnected: %s; %d messages spooled", reason_code, self.spool.pending())
        with self._wake:
            self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._wake:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                # The PUBACK beat publish() back to the sending thread.
                self._early_acks[mid] = reason_code
            else:
                self._settle(seq, reason_code)
            self._wake.notify_all()

    def _settle(self, seq: int, reason_code: ReasonCode) -> None:
        """Deletes a delivered message; keeps a refused one for a retry after the backoff. Under self._wake."""
        if seq == STATUS_SEQ:
            # The online status is no spooled message, and the broker retains it whether anyone listens or not.
            return
        if delivered(reason_code):
            self.spool.delete(seq)
            self.acked += 1
            self._backoff_s = 0.0
            return
        self.refused += 1
        if self._retry_from is None or seq < self._retry_from:
            self._retry_from = seq
        if time.monotonic() >= self._resume_at:
            self._backoff_s = min(max(1.0, 2 * self._backoff_s), MAX_BACKOFF_S)
            self._resume_at = time.monotonic() + self._backoff_s
            log.warning("uplink: the broker kept message %d back (%s); retrying in %.0f s", seq, reason_code,
                        self._backoff_s)  # fmt: skip

    def _wait_for_room(self) -> int:
        """Blocks until connected, past any backoff, with room in the window; 0 when stopping."""
        with self._wake:
            while not self._stopping and (
                not self._connected or len(self._inflight) >= self.max_inflight or time.monotonic() < self._resume_at
            ):
                backoff_left = self._resume_at - time.monotonic()
                self._wake.wait(timeout=min(1.0, backoff_left) if backoff_left > 0 else 1.0)
            if self._retry_from is not None:
                self._cursor = min(self._cursor, self._retry_from - 1)
                self._retry_from = None
            return 0 if self._stopping else self.max_inflight - len(self._inflight)

    def _run(self) -> None:
        while room := self._wait_for_room():
            try:
                self._send_batch(room)
            except Exception:
                # A broken spool or a bug must not end the uplink for good: retry after a pause.
                log.exception("uplink: sending failed; retrying in 1 s")
                with self._wake:
                    self._wake.wait(timeout=1.0)

    def _send_batch(self, room: int) -> None:
        with self._wake:
            sending = set(self._inflight.values())
        batch = [m for m in self.spool.after(self._cursor, room) if m[0] not in sending]
        if not batch:
            with self._wake:
                self._wake.wait(timeout=1.0)
            return
        for seq, topic, payload in batch:
            # Not under self._wake: paho calls on_publish holding its own lock, which publish() needs too.
            try:
                info = self._client.publish(topic, payload, qos=1)
            except ValueError as exc:
                self._replace_with_dead_letter(seq, topic, payload, str(exc))
                return
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("uplink publish failed (%s); will retry", mqtt.error_string(info.rc))
                with self._wake:
                    self._wake.wait(timeout=1.0)
                return
            self._cursor = max(self._cursor, seq)
            with self._wake:
                if info.mid in self._early_acks:
                    self._settle(seq, self._early_acks.pop(info.mid))
                else:
                    self._inflight[info.mid] = seq

    def _replace_with_dead_letter(self, seq: int, topic: str, payload: bytes, reason: str) -> None:
        """A message paho will never publish becomes, in its place in the spool, a dead letter saying why."""
        log.warning("uplink: cannot publish message %d on %r (%s); sending a dead letter instead", seq, topic, reason)
        try:
            site, channel = parse_uplink_topic(topic)
        except ValueError:
            site, channel = "", ""
        if channel in ("", "deadletters"):
            log.error("uplink: message %d on %r can be neither sent nor dead-lettered; dropped", seq, topic)
            self.spool.delete(seq)
            return
        kept = payload[:DEAD_LETTER_KEEPS]
        letter = DeadLetter(topic=topic, payload=kept, reason=f"uplink: {reason}", source="uplink")
        self.spool.replace(seq, uplink_topic(site, "deadletters"), encode("deadletters", letter))
