"""Central ingest: uplink messages from MQTT into the store, acknowledged only after commit.

Several workers share one subscription (``$share/patrolnet-ingest/...``), so
the broker splits the messages between them. Each worker keeps a persistent
MQTT v5 session under a stable name (``ingest-<hostname>`` unless told
otherwise: a name that changes with every start orphans the session, and the
broker keeps handing it a share of the uplink) with an expiry long enough to
outlive an outage, and acknowledges a message only once the transaction
holding its rows has committed: if a worker dies in between, the broker
delivers the message again and the idempotent insert makes it one row.

No message can stop the writer. One that does not parse, is larger than the
payload cap, or carries a time before 2000 or more than a day ahead is written
to ``dead_letters`` with its reason and acknowledged; so is one the database
refuses, and one the site registry refuses: a site that is not registered, a
place that differs from the site's registered place, or a node id not
registered to the site (``alerts.identity.registry_mismatch``). Each worker
keeps its own cached copy of the registry (``alerts.store.sites.SiteRegistry``);
while it cannot be read (the database away) messages wait unacknowledged.
A database that refuses even the dead letter is broken (a dropped
table, revoked rights): the writer thread stops with the message
unacknowledged, ``alive()`` turns False, and ``patrolnet ingest`` exits
non-zero for its service manager to restart it (and someone to look).

After the commit (a dead letter is stored too), a message that asked for it is confirmed to its node: one
``Confirmation`` per response topic and batch, with the messages' correlation data (see
``alerts.core.protocol``), and only on a confirmation topic of the site the message came from, so that no node
can make ingest publish into another site's commands. The node keeps each message until then, and sends it again
when no confirmation comes: a broker that was SIGKILLed, or a share stranded with a dead worker, loses nothing.

Each worker also publishes the centre's snapshot requests to the nodes (``alerts.intake.snapshot_commands``); a
node's answer comes back on its ``snapshot`` channel and is stored like any message (``alerts.store.snapshots``).

Messages are written in batches: whatever is queued when a writer is free
goes in one transaction (up to the batch size), so an alarm is never held
back waiting for company, and under load batches grow by themselves.

Two lanes, each a writer thread with its own queue and database connection:
the alarm lane takes events, alerts and node status, the bulk lane readings,
heartbeats and dead letters (``lane_of``). Decoding and copying a node's batch of a few
hundred readings takes ten milliseconds or more; in its own lane an alarm
waits for none of it, only for its own small transaction. Each lane
acknowledges and confirms its messages after its own commit, so the guarantee
(a message is acknowledged and confirmed only once stored) holds per message.

Example:
    >>> from alerts.core.models import Place
    >>> from alerts.identity import RegisteredSite
    >>> place = Place(sub_district="n", community="c", grid="g", site="s")
    >>> sites = lambda site, fresh: {"s": RegisteredSite(place=place, nodes=frozenset({"n1"}))}.get(site)
    >>> batch = WriteBatch()
    >>> add_message("patrolnet/v1/s/events", b'{"kind": "fire", "source": "n1"}', batch, "ingest-1", sites)
    >>> batch.dead_letters[0].reason
    'events: unreadable (ValidationError: type: Field required; place: Field required)'
    >>> status = b'{"node_id": "n1", "online": true, "ts": "1999-12-31T23:00:00Z", "place": {"sub_district": "n",'
    >>> status += b' "community": "c", "grid": "g", "site": "s"}}'
    >>> add_message("patrolnet/v1/s/status", status, batch, "ingest-1", sites)
    >>> batch.dead_letters[1].reason
    'status: unreadable (ValueError: time ts = 1999-12-31T23:00:00+00:00 is outside 2000-01-01 .. now + 1 day)'
    >>> add_message("patrolnet/v1/s/heartbeats", b"x" * 10, batch, "ingest-1", sites, max_bytes=4)
    >>> batch.dead_letters[2].reason
    'payload of 10 bytes is over the cap of 4 bytes'
    >>> add_message("patrolnet/v1/s/status", status.replace(b"1999", b"2025").replace(b'"n1"', b'"n2"'), batch,
    ...             "ingest-1", sites)
    >>> batch.dead_letters[3].reason
    "node 'n2' is not registered to site 's' (patrolnet broker add-node)"
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any, get_args

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import AwareDatetime, BaseModel, NaiveDatetime, ValidationError

from alerts.core import protocol
from alerts.core.models import DEAD_LETTER_KEEPS, DeadLetter
from alerts.core.mqtt import connect, make_client
from alerts.core.protocol import (
    MAX_CORRELATION_BYTES,
    UPLINK_FILTER,
    Confirmation,
    parse_confirm_topic,
    parse_uplink_topic,
)
from alerts.identity import RegisteredSite, registry_mismatch
from alerts.intake.snapshot_commands import AGAIN_S, SnapshotDispatcher
from alerts.store.database import WriteBatch, write_batch
from alerts.store.sites import SiteRegistry

log = logging.getLogger(__name__)

SHARE_GROUP = "patrolnet-ingest"
MAX_PAYLOAD_BYTES = 4_000_000
"""The largest uplink message taken: an event with its camera mosaic is a few hundred kilobytes."""
SESSION_EXPIRY_S = 86_400
"""How long the broker keeps a worker's session (and queues its share) while the worker is away."""
SESSION_TAKEN_OVER = 142
"""The DISCONNECT reason when another connection took the client id's session."""
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)

BULK_CHANNELS = frozenset({"readings", "heartbeats", "deadletters", "snapshot"})
"""The uplink channels the bulk lane writes (a snapshot answer is a JPEG of up to 1 MB: never ahead of an alarm);
the alarm lane writes the rest (events, alerts, node status) and anything whose topic names no channel (it becomes
a dead letter there)."""
LANES = ("alarm", "bulk")

Sites = Callable[[str, bool], RegisteredSite | None]
"""What the registry knows of a site (None: not registered), read afresh when the second argument is True (a
message it would refuse); raises psycopg.Error when it cannot be read."""


def default_name() -> str:
    """A worker name that stays the same across restarts on one host."""
    return f"ingest-{socket.gethostname()}"


def lane_of(topic: str) -> str:
    """The lane that writes a message of ``topic``, by its last level (the channel), without parsing the rest.

    >>> lane_of("patrolnet/v1/elm-row/alerts"), lane_of("patrolnet/v1/elm-row/readings"), lane_of("junk")
    ('alarm', 'bulk', 'alarm')
    """
    return "bulk" if topic.rpartition("/")[2] in BULK_CHANNELS else "alarm"


def _holds_time(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether a field of this type can hold a time: a datetime, or a model or list holding one. A model already
    being looked into (``seen``: one that holds itself) counts as holding one, so that it is walked, not missed.

    >>> class Step(BaseModel):
    ...     ts: datetime
    ...     then: list[Step] = []
    >>> _time_fields(Step), _holds_time(list[Step] | None), _holds_time(int | str)
    (('ts', 'then'), True, False)
    """
    if isinstance(annotation, type):
        if issubclass(annotation, datetime | AwareDatetime | NaiveDatetime):
            return True
        if not issubclass(annotation, BaseModel):
            return False
        return annotation in seen or bool(_fields_holding_time(annotation, seen | {annotation}))
    return any(_holds_time(arg, seen) for arg in get_args(annotation))


def _fields_holding_time(model: type[BaseModel], seen: frozenset[type]) -> tuple[str, ...]:
    return tuple(name for name, info in model.model_fields.items() if _holds_time(info.annotation, seen))


@cache
def _time_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that can hold a time, found once a model: a batch of readings walks one field
    each (``ts``) instead of every field of every reading and of its place.

    >>> from alerts.core.models import Heartbeat, Reading
    >>> _time_fields(Reading), _time_fields(Heartbeat)
    (('ts',), ('ts', 'started_at', 'devices'))
    """
    return _fields_holding_time(model, frozenset({model}))


def _first_outside(value: Any, low: datetime, high: datetime) -> tuple[str, datetime] | None:
    """(path, time) of the first time in ``value`` outside ``low`` .. ``high``; None when there is none."""
    if isinstance(value, datetime):
        return None if low <= value <= high else ("", value)
    found = None
    if isinstance(value, BaseModel):
        for name in _time_fields(type(value)):
            if (found := _first_outside(getattr(value, name), low, high)) is not None:
                return f".{name}{found[0]}", found[1]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := _first_outside(item, low, high)) is not None:
                return f"[{i}]{found[0]}", found[1]
    return found


def check_times(parsed: Sequence[BaseModel], now: datetime) -> None:
    """ValueError naming the first time (of any model field) before 2000 or more than a day after ``now``."""
    found = _first_outside(parsed[0] if len(parsed) == 1 else parsed, EARLIEST, now + AHEAD)
    if found is not None:
        path, ts = found
        raise ValueError(f"time {path.lstrip('.')} = {ts.isoformat()} is outside 2000-01-01 .. now + 1 day")


def _explain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in errors[:10])
    if isinstance(exc, OverflowError):
        return f"a time is outside 2000-01-01 .. now + 1 day ({exc})"
    return str(exc)


def dead_letter(topic: str, payload: bytes, reason: str, worker: str) -> DeadLetter:
    """A dead letter the store can always take: its reason bounded, and free of the NUL that text refuses.

    >>> dead_letter("t", b"", "bad" + chr(0) + "byte", "w").reason
    'bad\\\\x00byte'
    >>> len(dead_letter("t", b"", "!" * 3000, "w").reason)
    2000
    """
    return DeadLetter(topic=topic, payload=payload, reason=reason.replace("\x00", "\\x00")[:2000], source=worker)


def add_message(
    topic: str, payload: bytes, batch: WriteBatch, worker: str, sites: Sites, max_bytes: int = MAX_PAYLOAD_BYTES
) -> None:
    """Adds one uplink message to a batch, or a dead letter saying why it could not be. ``sites`` is asked about
    the topic's site, and what it raises (the registry cannot be read) is the caller's: the message is not
    refused for that."""
    reason = None
    channel = "?"
    if len(payload) > max_bytes:
        reason = f"payload of {len(payload)} bytes is over the cap of {max_bytes} bytes"
        payload = payload[:DEAD_LETTER_KEEPS]
    else:
        # A message can raise anything (OverflowError on year 9999, RecursionError): none may stop the writer.
        try:
            site, channel = parse_uplink_topic(topic)
            parsed = protocol.decode(channel, payload)
            check_times(parsed, datetime.now(UTC))
        except Exception as exc:
            reason = f"{channel}: unreadable ({type(exc).__name__}: {_explain(exc)})"
        else:
            # The topic's site is the sender's identity (its broker credentials cover only that site); the
            # registry, never the payload, says where that site is and which nodes are its own. A node's
            # dead letters name no place: they are kept as sent.
            if channel != "deadletters":
                reason = registry_mismatch(site, sites(site, False), parsed)  # type: ignore[arg-type]
                if reason is not None:  # perhaps registered since the copy was read: ask afresh before refusing
                    reason = registry_mismatch(site, sites(site, True), parsed)  # type: ignore[arg-type]
    if reason is not None:
        log.warning("dead letter on %s: %s", topic, reason)
        batch.dead_letters.append(dead_letter(topic, payload, reason, worker))
        return
    targets: dict[str, list[Any]] = {
        "events": batch.events,
        "alerts": batch.alerts,
        "readings": batch.readings,
        "heartbeats": batch.heartbeats,
        "status": batch.statuses,
        "deadletters": batch.dead_letters,
        "snapshot": batch.snapshots,
    }
    targets[channel].extend(parsed)


def confirmation_of(message: mqtt.MQTTMessage) -> tuple[str, str] | None:
    """(response topic, correlation data) of a message that asks to be confirmed, or None: when it does not ask,
    or asks on a topic that is not a confirmation topic of the site of the message's own topic.

    >>> from paho.mqtt.properties import Properties
    >>> m = mqtt.MQTTMessage(topic=b"patrolnet/v1/elm-row/events")
    >>> m.properties = Properties(PacketTypes.PUBLISH)
    >>> m.properties.ResponseTopic, m.properties.CorrelationData = "patrolnet/v1/elm-row/commands/confirm/n1", b"a/7"
    >>> confirmation_of(m)
    ('patrolnet/v1/elm-row/commands/confirm/n1', 'a/7')
    >>> m.properties.ResponseTopic = "patrolnet/v1/oak-yard/commands/confirm/n1"
    >>> confirmation_of(m) is None
    True
    """
    props = message.properties
    topic = getattr(props, "ResponseTopic", None)
    data = getattr(props, "CorrelationData", None)
    if not topic or not data or len(data) > MAX_CORRELATION_BYTES:
        return None
    try:
        site, _ = parse_confirm_topic(topic)
        same_site = site == parse_uplink_topic(message.topic)[0]
        correlation = bytes(data).decode()
    except ValueError:  # UnicodeDecodeError among them
        return None
    return (topic, correlation) if same_site else None


class IngestWorker:
    """One ingest worker; run as many as the load needs, each under its own stable name."""

    def __init__(
        self,
        mqtt_url: str,
        database_url: str,
        name: str | None = None,
        batch_size: int = 500,
        flush_s: float = 0.0,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        session_expiry_s: int = SESSION_EXPIRY_S,
        draining: bool = False,
        snapshot_again_s: float = AGAIN_S,
    ) -> None:
        self.name = name or default_name()
        self.draining = draining
        self._last_message = time.monotonic()
        self.database_url = database_url
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.max_payload_bytes = max_payload_bytes
        self.sites = SiteRegistry(database_url)
        self.counts: Counter[str] = Counter()
        self.last_batch_at: datetime | None = None
        self._received = self._written = 0
        self._tally = threading.Lock()
        """Guards what both lanes count: ``counts``, ``_written``, ``last_batch_at``."""
        # Bounded, and a full queue blocks paho's thread: the broker then holds the rest, nothing is lost.
        self._lanes: dict[str, queue.Queue[mqtt.MQTTMessage]] = {
            lane: queue.Queue(maxsize=batch_size * 4) for lane in LANES
        }
        self._stop = threading.Event()
        self._local = threading.local()
        self._subscribed = threading.Event()
        self._client, self._address, self._props = make_client(
            mqtt_url,
            client_id=f"patrolnet-{self.name}",
            persistent=True,
            manual_ack=True,
            session_expiry_s=session_expiry_s,
            no_delay=True,
        )
        self._client.suppress_exceptions = True  # a callback's error is logged; it never ends paho's thread
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_unsubscribe = self._on_unsubscribe
        self._client.on_disconnect = self._on_disconnect
        self._taken_back = threading.Event()
        self.snapshots = SnapshotDispatcher(database_url, self._publish, self.name, again_s=snapshot_again_s)
        self._threads = [
            threading.Thread(target=self._run, args=(self._lanes[lane],), name=f"{self.name}-{lane}", daemon=True)
            for lane in LANES
        ]

    @property
    def _conn(self) -> psycopg.Connection | None:
        """The database connection of the calling lane's thread."""
        conn: psycopg.Connection | None = getattr(self._local, "conn", None)
        return conn

    @_conn.setter
    def _conn(self, conn: psycopg.Connection | None) -> None:
        self._local.conn = conn

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        connect(self._client, self._address, self._props, clean_start=False)
        if not self.draining:
            self.snapshots.start()

    def _publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    def alive(self) -> bool:
        """False once a writer thread has died: nothing of its lane would be stored any more."""
        return all(thread.is_alive() for thread in self._threads) or self._stop.is_set()

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=10)

    def stop(self) -> None:
        self.snapshots.stop()
        self._stop.set()
        self._join()
        self.sites.close()
        self._client.disconnect()
        self._client.loop_stop()

    def drain(self, idle_s: float = 3.0, timeout: float = 3600.0) -> bool:
        """Stores what waits in this (``draining``) worker's session, then ends the session: how a worker is
        retired without losing its share. False if the share did not drain within ``timeout``."""
        deadline = time.monotonic() + timeout
        drained = self.wait_ready(min(timeout, 60.0))
        while drained and not self._settled(idle_s):
            drained = time.monotonic() < deadline and not self._taken_back.is_set()
            time.sleep(0.2)
        if not drained or self._taken_back.is_set():
            self.stop()
            return False
        self._stop.set()
        self._join()
        self.sites.close()
        ended = Properties(PacketTypes.DISCONNECT)
        ended.SessionExpiryInterval = 0
        self._client.disconnect(properties=ended)
        self._client.loop_stop()
        log.info("%s drained: %d messages stored, session ended", self.name, self._written)
        return True

    def _settled(self, idle_s: float) -> bool:
        """Whether nothing came for ``idle_s`` and all that came is stored."""
        idle = time.monotonic() - self._last_message >= idle_s
        empty = all(lane.empty() for lane in self._lanes.values())
        return idle and empty and self.alive() and self._written == self._received

    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        self._last_message = message.timestamp = time.monotonic()  # the registry reads again for later arrivals
        self._received += 1
        self._lanes[lane_of(message.topic)].put(message)

    def _on_disconnect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if self.draining and reason_code == SESSION_TAKEN_OVER:
            # The worker itself is back and took its session: leave it to it rather than take it back in turn.
            log.warning("%s is back and took its session over: not draining it", self.name)
            self._taken_back.set()
            self._subscribed.set()
            client.disconnect()

    def _on_unsubscribe(self, client: mqtt.Client, userdata, mid, reason_codes, properties) -> None:
        log.info("%s draining: no new messages, storing what its session holds", self.name)
        self._subscribed.set()

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        if self.draining:
            # The session keeps its share of the subscription: leave it, so only what is queued still comes.
            client.unsubscribe(f"$share/{SHARE_GROUP}/{UPLINK_FILTER}")
            return
        client.subscribe(f"$share/{SHARE_GROUP}/{UPLINK_FILTER}", qos=1)
        log.info("%s subscribing to %s (session present: %s)", self.name, UPLINK_FILTER, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("%s: the broker refused the subscription: %s", self.name, reason_codes)
            return
        self._subscribed.set()

    def _collect(self, lane: queue.Queue[mqtt.MQTTMessage]) -> list[mqtt.MQTTMessage]:
        try:
            messages = [lane.get(timeout=0.2)]
        except queue.Empty:
            return []
        # What is already queued joins the batch at once; waiting for more is only worth it when asked for,
        # since under load batches fill by themselves while the previous one is written.
        deadline = time.monotonic() + self.flush_s
        while len(messages) < self.batch_size:
            try:
                messages.append(lane.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    messages.append(lane.get(timeout=left))
                except queue.Empty:
                    break
        return messages

    def _decoded(self, messages: list[mqtt.MQTTMessage]) -> WriteBatch | None:
        """The batch of ``messages``, once the site registry could be read; None only when stopping."""
        while not self._stop.is_set():
            batch = WriteBatch()
            try:
                for message in messages:
                    sites = partial(self.sites.get, arrived_at=message.timestamp)
                    add_message(message.topic, bytes(message.payload), batch, self.name, sites, self.max_payload_bytes)
                return batch
            except psycopg.Error as exc:
                log.warning("%s: cannot read the site registry, keeping %d messages: %s", self.name, len(messages), exc)
                with self._tally:
                    self.counts["registry_retries"] += 1
                self._stop.wait(1.0)
        return None

    def _run(self, lane: queue.Queue[mqtt.MQTTMessage]) -> None:
        """One lane's writer: batches from ``lane``, each committed, then acknowledged and confirmed."""
        try:
            while not self._stop.is_set():
                messages = self._collect(lane)
                if not messages:
                    continue
                batch = self._decoded(messages)
                if batch is None or not self._write(batch, messages):
                    return
                for message in messages:
                    self._client.hold_ack(message.mid, message.qos)
                self._client.send_acks()
                self._confirm(messages)
                with self._tally:
                    self._written += len(messages)
                    self.counts["messages"] += len(messages)
                    self.counts["batches"] += 1
                    self.last_batch_at = datetime.now(UTC)
        except BaseException:
            log.exception("%s: a writer thread died; nothing is stored until the process restarts", self.name)
            raise

    def _confirm(self, messages: list[mqtt.MQTTMessage]) -> None:
        """Tells each node which of its messages are stored (they are committed): one message per response topic."""
        stored: dict[str, list[str]] = {}
        for message in messages:
            answer = confirmation_of(message)
            if answer is not None:
                stored.setdefault(answer[0], []).append(answer[1])
        for topic, ids in stored.items():
            # QoS 1 while the node listens; one lost with its connection is made good by the node sending again,
            # and so is one paho refuses: what a node put in its ResponseTopic must not end the writer.
            try:
                self._client.publish(topic, Confirmation(ids=ids).model_dump_json(), qos=1)
            except ValueError as exc:
                log.warning("%s: no confirmation on %r: %s", self.name, topic, exc)
        with self._tally:
            self.counts["confirmed"] += sum(map(len, stored.values()))

    def _write(self, batch: WriteBatch, messages: list[mqtt.MQTTMessage]) -> bool:
        """Commits a batch, retrying while the database is away; False only when stopping."""
        while not self._stop.is_set():
            try:
                self._commit(batch)
                return True
            except psycopg.OperationalError as exc:
                log.warning("%s: database away, keeping %d messages unacknowledged: %s", self.name, len(batch), exc)
                with self._tally:
                    self.counts["database_retries"] += 1
                self._conn = None
                self._stop.wait(1.0)
            except Exception as exc:
                # One bad row must not hold back the rest: write message by message.
                log.warning("%s: batch refused (%s); writing messages one by one", self.name, exc)
                self._reset()
                return self._write_each(messages)
        return False

    def _write_each(self, messages: list[mqtt.MQTTMessage]) -> bool:
        for message in messages:
            single = self._decoded([message])
            if single is None:
                return False
            try:
                self._commit(single)
            except psycopg.OperationalError:
                if not self._write(single, [message]):
                    return False
            except Exception as exc:
                self._reset()
                reason = f"refused by the database ({type(exc).__name__}: {exc})"
                letter = dead_letter(message.topic, bytes(message.payload), reason, self.name)
                if not self._write_letter(letter):
                    return False
        return True

    def _write_letter(self, letter: DeadLetter) -> bool:
        """Writes one dead letter, retrying while the database is away. A store that refuses even a dead letter
        is broken, not the message: the writer stops, leaving the message unacknowledged for the next start."""
        while not self._stop.is_set():
            try:
                self._commit(WriteBatch(dead_letters=[letter]))
                return True
            except psycopg.OperationalError:
                self._conn = None
                self._stop.wait(1.0)
            except psycopg.Error as exc:
                raise RuntimeError(f"the store refuses even a dead letter ({exc}); it needs mending") from exc
        return False

    def _reset(self) -> None:
        """Drops the connection after a failure that was not the database going away: it may be left broken."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _pipelined(self, batch: WriteBatch) -> int:
        """Writes a small batch in one round trip from BEGIN to COMMIT, but for the answers write_batch reads: an
        alarm's transaction waits for the database's turn a few times, not a dozen. BEGIN and COMMIT go as
        statements: psycopg's transaction() in pipeline mode syncs on entering and leaving it (an event waited 4
        times with it, an alert 6; now 1 and 2, see ``tests/test_ingest.py``). A statement that fails makes the
        server skip the rest, COMMIT included, and the error rises here, the connection left in the failed
        transaction: it is dropped, which rolls that back, and the next write connects afresh."""
        assert self._conn is not None
        try:
            with self._conn.pipeline():
                self._conn.execute("BEGIN")
                changes = write_batch(self._conn, batch)
                self._conn.execute("COMMIT")
        except Exception:
            self._reset()
            raise
        return changes

    def _commit(self, batch: WriteBatch) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        if batch.small():
            changes = self._pipelined(batch)
        else:
            with self._conn.transaction():
                changes = write_batch(self._conn, batch)
        with self._tally:
            self.counts["alert_changes"] += changes
            self.counts["dead_letters"] += len(batch.dead_letters)
