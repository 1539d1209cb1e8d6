"""The event sink: the one thread of a node that waits on disk.

Sensor messages, camera events, dead letters and heartbeats reach it through
one bounded FIFO queue. For each batch of events it runs, in order, the
camera picture of a linked sensor's fire alarm, alarm verification and the
alert policy (all in memory, once), then writes what must survive in one
transaction (``Spool.transaction``): the messages for the uplink spool, the
changed state (``EdgeState``), the readings waiting, and the deliveries of
the sensor messages it is about to acknowledge (``Ack.changes``,
``edge.state.Deliveries``), so a node killed at any moment has all or
none, and never raises a second alert for one alarm after its restart.
It then acknowledges those sensor messages, in the order they came: the
local broker forgets a sensor message only once all it said is on disk, a
node killed before that hears it again after its restart, and one whose
acknowledgement was lost with the node is known for handled. A write that
fails because the disk is busy (``sqlite3.OperationalError``) is rolled
back and retried whole; a batch that cannot be processed at all becomes a
dead letter with the reason.

Readings wait up to ``FLUSH_S`` to go upstream together, one spooled message
for many: each spooled message costs a disk sync. The readings of a message
that raised an event go at once too, in a transaction right after the
event's own: the alarm is spooled, and on its way, without waiting for the
readings to be encoded and synced; the messages are acknowledged after both.

When the queue is full: a sensor message blocks the MQTT callback until
there is room (the broker holds the messages behind it, and nothing is
lost); a camera event is dropped and counted (``sink_dropped``), since the
camera raises it again from the next frames.

Example:
    >>> import tempfile, pathlib
    >>> from alerts.core.models import Event, EventKind, Place
    >>> from alerts.core.policy import AlertPolicy
    >>> from detectors.verification import AlarmVerification
    >>> from edge.outbox import Spool
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> sent = []
    >>> sink = EventSink(AlarmVerification(), AlertPolicy(), EdgeState(Spool(folder / "s.sqlite3")),
    ...                  send=lambda channel, payload: sent.append(channel))
    >>> sink.start()
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> sink.put(Batch(events=[Event(kind=EventKind.FIRE, type="smoke", place=place, source="n1")]))
    True
    >>> sink.stop()
    >>> sent, sink.counts["alerts"]
    (['events', 'alerts'], 1)
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from alerts.core.models import Alert, DeadLetter, Event, Reading
from alerts.core.policy import AlertPolicy
from alerts.core.protocol import encode
from detectors.verification import AlarmVerification
from edge.state import Change, EdgeState
from edge.supervisor import Liveness

log = logging.getLogger(__name__)

FLUSH_S = 0.25
FLUSH_READINGS = 500
MAX_UNACKED = 10
"""Sensor messages waiting for their readings to be spooled before they are acknowledged, by default: half of
Mosquitto's default ``max_inflight_messages`` (20), since a full window would hold back the next message, an
alarm perhaps, until the readings flush. The node passes half its ``broker.max_inflight``."""
QUEUE_DEPTH = 10_000
DISK_RETRY_S = 0.5
SINK_TOPIC = "edge/sink"
"""The topic of a dead letter for a batch the sink could not process."""


@dataclass(frozen=True)
class Batch:
    """What one message or one timer round produced, and how to acknowledge it once stored."""

    events: list[Event] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    """State to save with them: the sensor rules' state of each sensor the events changed, as
    ``SensorRules.export`` gives it."""
    ack: Callable[[], None] | None = None


@dataclass(frozen=True)
class Ack:
    """Acknowledges one message (``send``), once what it produced is stored and, in the same transaction,
    ``changes``: what the node must remember of the message itself (its delivery, ``edge.state.Deliveries``)."""

    send: Callable[[], None]
    changes: list[Change] = field(default_factory=list)
    flush: Callable[[], None] | None = None
    """Sends what ``send`` only held: called once after the acknowledgements let go together (the MQTT client's
    ``send_acks``, one write for them all)."""

    def __call__(self) -> None:
        self.send()


@dataclass(frozen=True)
class Outgoing:
    """One message for the uplink, made on the sink's thread (a heartbeat reads the spool, for one)."""

    channel: str
    payload: Callable[[], bytes]
    ack: Callable[[], None] | None = None


Item = Batch | Outgoing


class EventSink:
    """See the module docstring. ``send(channel, payload)`` spools one message for the uplink, through the
    spool of ``state``: inside its open transaction, it joins it."""

    def __init__(
        self,
        verification: AlarmVerification,
        policy: AlertPolicy,
        state: EdgeState,
        send: Callable[[str, bytes], None],
        picture: Callable[[Event], Event] = lambda event: event,
        source: str = "",
        depth: int = QUEUE_DEPTH,
        max_unacked: int = MAX_UNACKED,
        stored: Callable[[Alert], None] = lambda alert: None,
    ) -> None:
        self.verification = verification
        self.policy = policy
        self.state = state
        self.send = send
        self.picture = picture
        self.source = source
        self.max_unacked = max_unacked
        self.stored = stored
        self.counts: Counter[str] = Counter()
        self.liveness = Liveness()
        self._queue: queue.Queue[Item | None] = queue.Queue(depth)
        self._readings: list[Reading] = []
        self._readings_since = 0.0
        self._acks: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name="event-sink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def restart(self) -> None:
        """A new thread after the old one died; what waits in the queue is still there."""
        self._thread = self._new_thread()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Handles what is queued, flushes the readings, and ends the thread."""
        self._stopping.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("event sink: queue still full at stop; %d items not handled", self._queue.qsize())
        self._thread.join(timeout=timeout)

    def put(self, item: Item, block: bool = True) -> bool:
        """Queues an item; blocks while the queue is full unless ``block`` is false, then drops it (False)."""
        try:
            self._queue.put(item, block=block)
        except queue.Full:
            self.counts["sink_dropped"] += 1
            return False
        return True

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            wait = FLUSH_S - (time.monotonic() - self._readings_since) if self._readings else None
            try:
                item = self._queue.get(timeout=max(0.0, wait) if wait is not None else 1.0)
            except queue.Empty:
                item = Batch()
            if item is None:
                self._commit([], [], None, flush=True)
                return
            with self.liveness.working():
                self._handle(item)

    def _handle(self, item: Item) -> None:
        try:
            if isinstance(item, Outgoing):
                self._commit([(item.channel, item.payload())], [], item.ack, flush=False)
                return
            self._batch(item)
        except Exception as exc:
            log.exception("event sink: could not handle %s", type(item).__name__)
            self.counts["sink_failed"] += 1
            self._letter(item, f"{type(exc).__name__}: {exc}")

    def _batch(self, batch: Batch) -> None:
        outgoing: list[tuple[str, bytes]] = []
        alerts: list[Alert] = []
        changes = list(batch.changes)
        for raw in batch.events:
            for event in self.verification.apply(self._pictured(raw)):
                outgoing.append(("events", encode("events", event)))
                changes.append(("verification", event.dedup_key, self.verification.export(event.dedup_key)))
                alert = self.policy.apply(event)
                if alert is not None:
                    outgoing.append(("alerts", encode("alerts", alert)))
                    alerts.append(alert)
                    changes.append(("policy", alert.dedup_key, self.policy.export(alert.dedup_key)))
        if batch.readings and not self._readings:
            self._readings_since = time.monotonic()
        self._readings += batch.readings
        self._commit(outgoing, changes, batch.ack, flush=bool(batch.events))
        self.counts["events"] += sum(1 for channel, _ in outgoing if channel == "events")
        self.counts["alerts"] += sum(1 for channel, _ in outgoing if channel == "alerts")
        for alert in alerts:
            self._tell_stored(alert)

    def _tell_stored(self, alert: Alert) -> None:
        """Tells ``stored`` (the clip recorders) of an alert spooled; its failure costs the clip, not the alert."""
        try:
            self.stored(alert)
        except Exception:
            log.exception("event sink: the stored-alert hook failed on %s", alert.id)
            self.counts["stored_hook_failed"] += 1

    def _pictured(self, event: Event) -> Event:
        """The event with its camera picture; without one when making it fails, for the alarm must still go."""
        try:
            return self.picture(event)
        except Exception:
            log.exception("event sink: no picture for %s", event.dedup_key)
            self.counts["picture_failed"] += 1
            return event

    def _commit(
        self, outgoing: list[tuple[str, bytes]], changes: list[Change], ack: Callable[[], None] | None, flush: bool
    ) -> None:
        """Stores the messages and the state they changed, then acknowledges what that lets go, in order.

        The readings waiting go in too when ``flush``, when they are due or many, or when too many messages
        wait for them. Every acknowledgement waits for the readings spooled before it (they keep their order);
        those it lets go have their deliveries saved in the same transaction.
        """
        acks = [*self._acks, ack] if ack is not None else self._acks
        waited = time.monotonic() - self._readings_since
        flush = bool(self._readings) and (
            flush or waited >= FLUSH_S or len(self._readings) >= FLUSH_READINGS or len(acks) >= self.max_unacked
        )
        release = flush or not self._readings
        delivered = [change for a in acks if isinstance(a, Ack) for change in a.changes] if release else []
        readings = self._readings if flush else []
        if outgoing and readings:
            # The alarm in a transaction of its own, first: the uplink sends it while the readings are encoded and
            # synced. Killed in between, the node has the alarm and the rules' state; the messages are not yet
            # acknowledged, so the broker sends them again and the rules restored are past the alarm.
            self._durably(lambda: self._store(outgoing, [], changes))
            outgoing, changes = [], []
        if outgoing or readings or changes or delivered:
            self._durably(lambda: self._store(outgoing, readings, changes + delivered))
        if readings:
            self.counts["readings"] += len(readings)
            self._readings = []
        self._acks = [] if release else acks
        if release:
            for each in acks:
                each()
            for send_held in dict.fromkeys(a.flush for a in acks if isinstance(a, Ack) and a.flush is not None):
                send_held()

    def _store(self, outgoing: list[tuple[str, bytes]], readings: list[Reading], changes: list[Change]) -> None:
        """Spools the messages and the readings, and saves the state, in one transaction synced once."""
        with self.state.spool.transaction():
            for channel, payload in outgoing:
                self.send(channel, payload)
            if readings:
                self.send("readings", encode("readings", readings))
            self.state.save(changes)

    def _durably(self, write: Callable[[], None]) -> None:
        """Runs ``write`` until the disk takes it; a busy or locked SQLite file is waited out."""
        while True:
            try:
                write()
                return
            except sqlite3.OperationalError as exc:
                self.counts["disk_retries"] += 1
                log.warning("event sink: disk busy (%s); retrying", exc)
                time.sleep(DISK_RETRY_S)

    def _letter(self, item: Item, reason: str) -> None:
        if isinstance(item, Batch):
            payload = b"[" + b",".join(e.model_dump_json(exclude={"snapshot"}).encode() for e in item.events) + b"]"
        else:
            payload = item.channel.encode()
        letter = DeadLetter(topic=SINK_TOPIC, payload=payload, reason=reason, source=self.source)
        self.counts["dead_letters"] += 1
        self._commit([("deadletters", encode("deadletters", letter))], [], item.ack, flush=False)
