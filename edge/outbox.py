"""The edge outbox: a local SQLite spool drained to the uplink broker at QoS 1, kept until the centre has stored it.

A message is written to disk before anything is sent and deleted only when
central ingest confirms that it has committed it (``alerts.core.protocol``'s
``Confirmation`` on the node's ``confirm_topic``): each publish carries its
spool entry as ``CorrelationData`` and the confirmation topic as
``ResponseTopic``. A broker's PUBACK is not enough: a SIGKILLed broker forgets
what it had acknowledged and not yet saved, and a dead ingest worker strands
its share of the uplink. So a message still unconfirmed ``confirm_timeout_s``
after its PUBACK is sent again once a message acknowledged more than a second
after it has been confirmed (it was passed: lost, not late), or in any case
``MAX_CONFIRM_TIMEOUT_S`` after its PUBACK; and everything unconfirmed is sent
again at every reconnect. A late ingest (a backlog after an outage, a slow
database) confirms in order and passes nothing, so it is not sent copies that
would only make it later. A dropped uplink, a broker restart or a node crash loses nothing; a
message may arrive twice, which the central ingest absorbs because every insert
is idempotent by UUID. An Uplink without a confirmation topic deletes at the
PUBACK, as a plain MQTT publisher would. Mosquitto
answers reason 16 ("no matching subscribers") when no ingest worker is
subscribed, a success code under which it drops the message: that, and every
failure code that may pass later (``refused_for_good``), keeps the message, and
the uplink sends it again from there after a backoff (1 s doubling to 30 s; a
delivered message resets it). A message the broker refuses for good (not
authorized, an invalid topic or payload, too large) would be refused again at
every retry and hold everything behind it through each backoff: it is replaced
in the spool by a dead letter saying why, sent at once, with no backoff.

Nothing a message holds stops the uplink: one paho refuses to publish (a bad
topic, an oversized payload) or the broker refuses for good is replaced in the
spool by a dead letter saying why; a dead letter that cannot go either is
dropped, logged and counted (``Uplink.dropped``), so nothing loops. An error
in a callback is logged, not raised into paho's thread. The number of
unacknowledged messages is bounded, since paho runs out of message ids at
65,535 and an unbounded window only fills the broker's queue.

The spool is bounded (``SpoolBounds``): readings and heartbeats older than
``max_age_s`` are evicted, and beyond ``max_messages`` the oldest readings and
heartbeats go first; alarms, events, alerts and dead letters are evicted only
when they alone fill the bound. Every eviction is counted (``Spool.evicted``)
and logged. ``Spool.backlog()`` says how many messages wait unconfirmed and
the age of the oldest, which the node's heartbeat reports.

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

import heapq
import logging
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from alerts.core.models import DEAD_LETTER_KEEPS, DeadLetter
from alerts.core.mqtt import connect, make_client
from alerts.core.protocol import Confirmation, encode, parse_uplink_topic, uplink_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpoolBounds:
    """How much the spool keeps while the centre confirms nothing."""

    max_messages: int = 2_000_000
    """About two days of a busy node's uplink (readings four times a second, events, heartbeats)."""
    max_age_s: float = 7 * 86_400.0
    """Readings and heartbeats older than this are history nobody acts on; alarms are kept regardless."""


EXPENDABLE = ("readings", "heartbeats", "snapshot")
"""The channels evicted first, and the only ones evicted for their age (a snapshot answer outlives its request's
wait at the centre by far)."""
_EXPENDABLE_SQL = " OR ".join(f"topic GLOB '*/{channel}'" for channel in EXPENDABLE)


class Spool:
    """A durable FIFO of (topic, payload) messages, in the node's SQLite file.

    ``token`` names this spool file in correlation data: entries of a spool that was deleted and made anew
    start from 1 again, and a late confirmation meant for the old file must not delete them.
    """

    def __init__(self, path: Path, bounds: SpoolBounds | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.bounds = bounds or SpoolBounds()
        self.evicted: Counter[str] = Counter()
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
                " payload BLOB NOT NULL, created REAL)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
            if "created" not in columns:
                # A spool written before messages had a time: theirs is now, as far as its age bound knows.
                self._db.execute("ALTER TABLE outbox ADD COLUMN created REAL")
                self._db.execute("UPDATE outbox SET created = ?", (time.time(),))
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "INSERT OR IGNORE INTO outbox_meta (name, value) VALUES ('token', ?)", (secrets.token_hex(4),)
            )
            self.token: str = self._db.execute("SELECT value FROM outbox_meta WHERE name = 'token'").fetchone()[0]

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
            seq = db.execute(
                "INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)", (topic, payload, time.time())
            ).lastrowid
        assert seq is not None, "an INSERT has a rowid"
        return seq

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def get(self, seqs: Iterable[int]) -> list[tuple[int, str, bytes]]:
        """The entries of ``seqs`` still spooled, in order."""
        wanted = sorted(set(seqs))
        with self._lock:
            return self._db.execute(
                f"SELECT seq, topic, payload FROM outbox WHERE seq IN ({','.join('?' * len(wanted))}) ORDER BY seq",
                wanted,
            ).fetchall()

    def replace(self, seq: int, topic: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET topic = ?, payload = ? WHERE seq = ?", (topic, payload, seq))

    def delete(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def delete_many(self, seqs: Iterable[int]) -> int:
        """Deletes the entries of ``seqs`` in one transaction; how many were still spooled."""
        wanted = list(seqs)
        with self.transaction() as db:
            return db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in wanted]).rowcount

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def backlog(self, now: float | None = None) -> tuple[int, float | None]:
        """How many messages wait (unconfirmed), and the age in seconds of the oldest (None when none)."""
        with self._lock:
            count = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            # The first entry is the oldest (entries are spooled in order): no scan for the minimum.
            first = self._db.execute("SELECT created FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return count, None if first is None else max(0.0, (now or time.time()) - first[0])

    def enforce_bounds(self, now: float | None = None) -> int:
        """Evicts what is beyond ``bounds`` (see the module's docstring); how many messages it evicted."""
        now = now or time.time()
        count, oldest_s = self.backlog(now)
        if count <= self.bounds.max_messages and (oldest_s or 0.0) <= self.bounds.max_age_s:
            return 0
        evicted: list[tuple[int, str]] = []
        with self.transaction() as db:
            old = f"SELECT seq, topic FROM outbox WHERE created < ? AND ({_EXPENDABLE_SQL})"
            evicted += db.execute(old, (now - self.bounds.max_age_s,)).fetchall()
            over = db.execute("SELECT count(*) FROM outbox").fetchone()[0] - len(evicted) - self.bounds.max_messages
            if over > 0:
                # The oldest readings and heartbeats first; alarms only when nothing else is left to evict.
                young = f"SELECT seq, topic FROM outbox WHERE created >= ? AND ({_EXPENDABLE_SQL}) ORDER BY seq LIMIT ?"
                expendable = db.execute(young, (now - self.bounds.max_age_s, over)).fetchall()
                evicted += expendable
                over -= len(expendable)
            if over > 0:
                taken = {seq for seq, _ in evicted}
                rest = db.execute("SELECT seq, topic FROM outbox ORDER BY seq LIMIT ?", (over + len(taken),))
                evicted += [(seq, topic) for seq, topic in rest.fetchall() if seq not in taken][:over]
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq, _ in evicted])
        for _, topic in evicted:
            self.evicted[topic.rsplit("/", 1)[-1]] += 1
        if evicted:
            log.warning("spool over its bounds: evicted %d messages (%s so far)", len(evicted), dict(self.evicted))
        return len(evicted)

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


REFUSED_FOR_GOOD = frozenset({0x87, 0x90, 0x95, 0x99})
"""PUBACK reason codes the same message gets again however often it is sent: Not authorized (a site role made
before its channel existed), Topic Name invalid, Packet too large, Payload format invalid. The others may pass later
and are retried after the backoff: 16 No matching subscribers (no ingest worker yet), 0x97 Quota exceeded, 0x83
Implementation specific error (a broker plugin's, often a passing fault), 0x80 Unspecified error, 0x91 Packet
identifier in use; retrying costs a delay, while dead-lettering a message that would have passed costs the message."""


def packet_size(topic: str, payload: bytes, properties: Properties | None) -> int:
    """Bytes of the MQTT 5 PUBLISH packet (QoS 1) that carries ``payload`` on ``topic``: what a broker's Maximum
    Packet Size counts.

    >>> packet_size("a/b", b"x" * 10, None), packet_size("a/b", b"x" * 200, None)
    (20, 211)
    """
    # Topic (length and bytes), packet id, the properties (their length's varint and them), the payload.
    remaining = 2 + len(topic.encode()) + 2 + (len(properties.pack()) if properties else 1) + len(payload)
    length_bytes = next(n for n in (1, 2, 3, 4) if remaining < 128**n)
    return 1 + length_bytes + remaining


def refused_for_good(reason_code: ReasonCode | int) -> bool:
    """Whether a PUBACK's reason code refuses the message whatever the retry.

    >>> [refused_for_good(ReasonCode(PacketTypes.PUBACK, identifier=code)) for code in (0, 16, 0x80, 0x87, 0x97)]
    [False, False, False, True, False]
    """
    code = reason_code.value if isinstance(reason_code, ReasonCode) else reason_code
    return code in REFUSED_FOR_GOOD


STATUS_SEQ = 0
"""The in-flight entry of the online status: spool sequence numbers start at 1."""


CONFIRM_TIMEOUT_S = 10.0
"""How long after its PUBACK a message may stay unconfirmed before it is sent again."""
MAX_CONFIRM_TIMEOUT_S = 300.0
"""How long a message may stay unconfirmed, passed or not, before it is sent again."""
PASSED_BY_S = 1.0
"""A message is passed when one acknowledged this much later than it is confirmed: lost, not just late."""
MAX_UNCONFIRMED = 50_000
"""Messages acknowledged by the broker and awaiting confirmation, at most; more wait on disk."""
BOUNDS_EVERY_S = 10.0


class Uplink:
    """Drains a Spool to an MQTT broker in order, with a bounded in-flight window; keeps each message until the
    centre confirms it (with ``confirm_topic``) or the broker acknowledges it (without)."""

    def __init__(
        self,
        spool: Spool,
        url: str,
        client_id: str,
        max_inflight: int = 100,
        status_topic: str | None = None,
        online: bytes = b"",
        offline: bytes = b"",
        confirm_topic: str | None = None,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        max_unconfirmed: int = MAX_UNCONFIRMED,
        commands: dict[str, Callable[[str, bytes], None]] | None = None,
    ) -> None:
        """With ``status_topic``, ``offline`` is the client's last will (retained, QoS 1) and ``online`` is
        published there, retained, on every (re)connect. With ``confirm_topic`` (``alerts.core.protocol``'s
        ``confirm_topic`` of the node), a message leaves the spool only when ingest confirms it stored it.
        ``commands`` maps other command topics of the node to a handler of (topic, payload), run on paho's
        thread: it must not wait, and what it raises is logged."""
        self.spool = spool
        self.max_inflight = max_inflight
        self.acked = 0
        self.refused = 0
        self.rejected = 0
        self.dropped = 0
        self.confirmed = 0
        self.resent = 0
        self.confirm_topic = confirm_topic
        self.commands = commands or {}
        self.confirm_timeout_s = confirm_timeout_s
        self.max_unconfirmed = max_unconfirmed
        self._inflight: dict[int, int] = {}
        self._early_acks: dict[int, ReasonCode] = {}
        self._cursor = 0
        # The oldest refused message, sent again once the backoff has passed.
        self._retry_from: int | None = None
        # Refused for good by the broker, to be replaced by their dead letters on the sending thread: seq -> why.
        self._rejected: dict[int, str] = {}
        self._backoff_s = 0.0
        self._resume_at = 0.0
        # Acknowledged by the broker, not yet confirmed: seq -> when the broker acknowledged it; a heap of when to
        # look at each again; and the latest acknowledgement time of a confirmed message.
        self._unconfirmed: dict[int, float] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._passed_at = 0.0
        self._bounds_at = 0.0
        self._wake = threading.Condition()
        self._spooled = False
        """Set by ``notify``, cleared before each look at the spool: a commit that comes while the uplink reads the
        spool is not slept through (it would wait a whole second)."""
        self._stopping = False
        self._connected = False
        self._max_packet: int | None = None
        """The broker's Maximum Packet Size from its CONNACK, if it named one."""
        self._client, self._address, self._props = make_client(url, client_id, no_delay=True)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.suppress_exceptions = True
        self._status = (status_topic, online) if status_topic else None
        if status_topic:
            self._client.will_set(status_topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
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
            self._spooled = True
            self._wake.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("uplink %s:%s refused the connection: %s", self._address.host, self._address.port, reason_code)
            return
        log.info("uplink connected to %s:%s", self._address.host, self._address.port)
        self._max_packet = getattr(properties, "MaximumPacketSize", None)
        if self.confirm_topic:
            # Before any publish of this connection: the broker takes packets in order, so no confirmation of
            # what is sent next can miss the subscription.
            client.subscribe(self.confirm_topic, qos=1)
        for topic in self.commands:
            client.subscribe(topic, qos=1)
        if self._status:
            info = client.publish(*self._status, qos=1, retain=True)
            with self._wake:
                # It cannot be acknowledged before this returns: paho's callbacks run on this thread.
                self._inflight[info.mid] = STATUS_SEQ
        with self._wake:
            if self._unconfirmed:
                # The broker may have lost what it acknowledged (a restart from an older save): send it all again.
                log.info("uplink: sending %d unconfirmed messages again", len(self._unconfirmed))
                self._retry_from = min(self._retry_from or min(self._unconfirmed), min(self._unconfirmed))
                self._unconfirmed.clear()
                self._deadlines.clear()
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

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        handler = self.commands.get(message.topic)
        if handler is None:
            self._on_confirmation(client, userdata, message)
            return
        try:
            handler(message.topic, bytes(message.payload))
        except Exception:
            log.exception("uplink: the handler of %s failed", message.topic)

    def _on_confirmation(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """Deletes what ingest confirms it stored. An unreadable confirmation is logged and otherwise ignored:
        what it would have confirmed is sent again after the timeout."""
        try:
            ids = Confirmation.model_validate_json(message.payload).ids
        except ValidationError as exc:
            log.warning("uplink: unreadable confirmation on %s: %s", message.topic, exc)
            return
        prefix = f"{self.spool.token}/"
        # ASCII digits only: str.isdigit() also takes '²', which int() refuses, and a raise here ends paho's thread.
        seqs = [int(n) for i in ids if i.startswith(prefix) and (n := i[len(prefix) :]).isascii() and n.isdigit()]
        try:
            deleted = self.spool.delete_many(seqs)
        except sqlite3.Error:
            # Kept on disk, so sent again after the timeout; paho's thread must live to hear the next confirmation.
            log.exception("uplink: could not delete %d confirmed messages", len(seqs))
            return
        with self._wake:
            self.confirmed += deleted
            for seq in seqs:
                acked_at = self._unconfirmed.pop(seq, None)
                if acked_at is not None:
                    self._passed_at = max(self._passed_at, acked_at)

    def _settle(self, seq: int, reason_code: ReasonCode) -> None:
        """Deletes a delivered message, or awaits its confirmation; keeps a refused one for a retry after the
        backoff, or for its dead letter when refused for good. Under self._wake."""
        if seq == STATUS_SEQ:
            # The online status is no spooled message, and the broker retains it whether anyone listens or not.
            return
        if delivered(reason_code):
            if self.confirm_topic:
                now = time.monotonic()
                self._unconfirmed[seq] = now
                heapq.heappush(self._deadlines, (now + self.confirm_timeout_s, seq))
            else:
                self.spool.delete(seq)
            self.acked += 1
            self._backoff_s = 0.0
            return
        self.refused += 1
        if refused_for_good(reason_code):
            # Not on paho's thread: the spool may wait on the disk, and what the spool raises the sender retries.
            self._rejected[seq] = f"the broker refused it: {reason_code}"
            return
        if self._retry_from is None or seq < self._retry_from:
            self._retry_from = seq
        if time.monotonic() >= self._resume_at:
            self._backoff_s = min(max(1.0, 2 * self._backoff_s), MAX_BACKOFF_S)
            self._resume_at = time.monotonic() + self._backoff_s
            log.warning("uplink: the broker kept message %d back (%s); retrying in %.0f s", seq, reason_code,
                        self._backoff_s)  # fmt: skip

    def _due(self, room: int) -> list[int]:
        """The unconfirmed messages to send again now, oldest first (at most ``room``): past their timeout, and
        passed by a confirmation or past ``MAX_CONFIRM_TIMEOUT_S``. Under self._wake."""
        now = time.monotonic()
        due: list[int] = []
        later: list[tuple[float, int]] = []
        while self._deadlines and self._deadlines[0][0] <= now and len(due) < room:
            _, seq = heapq.heappop(self._deadlines)
            acked_at = self._unconfirmed.get(seq)
            if acked_at is None:
                continue  # confirmed, or sent again meanwhile
            if acked_at + PASSED_BY_S < self._passed_at or now - acked_at >= MAX_CONFIRM_TIMEOUT_S:
                del self._unconfirmed[seq]
                due.append(seq)
            else:
                later.append((now + self.confirm_timeout_s, seq))
        for entry in later:
            heapq.heappush(self._deadlines, entry)
        if due:
            self.resent += len(due)
            log.warning("uplink: %d messages unconfirmed, passed by later ones; sending them again", len(due))
        return due

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
                self._keep_bounds()
                self._send_batch(room)
            except Exception:
                # A broken spool or a bug must not end the uplink for good: retry after a pause.
                log.exception("uplink: sending failed; retrying in 1 s")
                with self._wake:
                    self._wake.wait(timeout=1.0)

    def _keep_bounds(self) -> None:
        if time.monotonic() >= self._bounds_at:
            self._bounds_at = time.monotonic() + BOUNDS_EVERY_S
            self.spool.enforce_bounds()

    def _dead_letter_rejected(self) -> list[int]:
        """Replaces each message the broker refused for good by its dead letter; the entries to send now."""
        with self._wake:
            rejected = dict(self._rejected)
        if not rejected:
            return []
        again = [
            seq
            for seq, topic, payload in self.spool.get(rejected)
            if self._replace_with_dead_letter(seq, topic, payload, rejected[seq])
        ]
        with self._wake:
            self.rejected += len(rejected)
            for seq in rejected:
                del self._rejected[seq]
        return again

    def _send_batch(self, room: int) -> None:
        again = self._dead_letter_rejected()
        with self._wake:
            self._spooled = False
            due = again + self._due(room - len(again))
            skip = set(self._inflight.values()).union(due)
            # Bounded like the in-flight window, so that an ingest outage leaves the backlog on the node's disk,
            # not in this process's memory and the broker's queue.
            fresh = min(room - len(due), self.max_unconfirmed - len(self._unconfirmed))
        batch = self.spool.get(due) if due else []
        if fresh > 0:
            batch += [m for m in self.spool.after(self._cursor, fresh) if m[0] not in skip]
        if not batch:
            with self._wake:
                if not self._spooled:
                    self._wake.wait(timeout=1.0)
            return
        for seq, topic, payload in batch:
            properties = self._properties(seq)
            size, limit = packet_size(topic, payload, properties), self._max_packet
            if limit is not None and size > limit:
                # Mosquitto would close the connection, and the message would be sent again at every reconnect.
                why = f"its PUBLISH packet of {size} bytes is over the broker's maximum packet size of {limit} bytes"
                self._replace_with_dead_letter(seq, topic, payload, why)
                return
            # Not under self._wake: paho calls on_publish holding its own lock, which publish() needs too.
            try:
                info = self._client.publish(topic, payload, qos=1, properties=properties)
            except ValueError as exc:
                self._replace_with_dead_letter(seq, topic, payload, str(exc))
                return
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("uplink publish failed (%s); will retry", mqtt.error_string(info.rc))
                with self._wake:
                    self._retry_from = min(seq, self._retry_from or seq)
                    self._wake.wait(timeout=1.0)
                return
            self._cursor = max(self._cursor, seq)
            with self._wake:
                if info.mid in self._early_acks:
                    self._settle(seq, self._early_acks.pop(info.mid))
                else:
                    self._inflight[info.mid] = seq

    def _properties(self, seq: int) -> Properties | None:
        """The PUBLISH properties that ask ingest to confirm entry ``seq`` (None without a confirmation topic)."""
        if not self.confirm_topic:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.confirm_topic
        props.CorrelationData = f"{self.spool.token}/{seq}".encode()
        return props

    def _replace_with_dead_letter(self, seq: int, topic: str, payload: bytes, reason: str) -> bool:
        """A message that will never be published becomes, in its place in the spool, a dead letter saying why
        (True). A dead letter, or a message on no uplink topic, is deleted, counted in ``dropped`` (False): its
        own dead letter would be refused the same way, and again."""
        log.warning("uplink: cannot publish message %d on %r (%s); sending a dead letter instead", seq, topic, reason)
        try:
            site, channel = parse_uplink_topic(topic)
        except ValueError:
            site, channel = "", ""
        if channel in ("", "deadletters"):
            log.error("uplink: message %d on %r can be neither sent nor dead-lettered; dropped", seq, topic)
            self.spool.delete(seq)
            with self._wake:
                self.dropped += 1
            return False
        # Its dead letter must pass the broker's limit too: base64 makes the part it keeps a third larger.
        kept = payload[: min(DEAD_LETTER_KEEPS, (self._max_packet or DEAD_LETTER_KEEPS * 2) // 2)]
        letter = DeadLetter(topic=topic, payload=kept, reason=f"uplink: {reason}", source="uplink")
        self.spool.replace(seq, uplink_topic(site, "deadletters"), encode("deadletters", letter))
        return True
