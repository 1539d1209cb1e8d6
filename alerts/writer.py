"""Central ingest: uplink messages from MQTT into the store, acknowledged only after commit.

Several workers share one subscription (``$share/patrolnet-ingest/...``), so
the broker splits the messages between them. Each worker keeps a persistent
MQTT v5 session and acknowledges a message only once the transaction holding
its rows has committed: if a worker dies in between, the broker delivers the
message again and the idempotent insert makes it one row. A message that does
not parse is written to ``dead_letters`` with its reason, then acknowledged.

Messages are written in batches: whatever is queued when the writer is free
goes in one transaction (up to the batch size), so an alarm is never held
back waiting for company, and under load batches grow by themselves.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import psycopg
from pydantic import TypeAdapter, ValidationError

from alerts.identity import bound_to
from alerts.models import Alert, DeadLetter, Event, Heartbeat, Reading
from alerts.store import Batch, write_batch
from ingest.mqtt import UPLINK_FILTER, connect, make_client, parse_uplink_topic

log = logging.getLogger(__name__)

SHARE_GROUP = "patrolnet-ingest"
_READINGS = TypeAdapter(list[Reading])


def decode(topic: str, payload: bytes, batch: Batch, worker: str) -> None:
    """Adds one uplink message to a batch, or a dead letter saying why it could not be."""
    try:
        site, channel = parse_uplink_topic(topic)
        if channel == "events":
            batch.events.append(bound_to(site, Event.model_validate_json(payload)))
        elif channel == "alerts":
            batch.alerts.append(bound_to(site, Alert.model_validate_json(payload)))
        elif channel == "readings":
            batch.readings.extend(bound_to(site, _READINGS.validate_json(payload)))
        elif channel == "heartbeats":
            batch.heartbeats.append(bound_to(site, Heartbeat.model_validate_json(payload)))
        else:
            batch.dead_letters.append(DeadLetter.model_validate_json(payload))
    except (ValueError, ValidationError) as exc:
        log.warning("dead letter on %s: %s", topic, exc)
        batch.dead_letters.append(DeadLetter(topic=topic, payload=payload, reason=str(exc), source=worker))


class IngestWorker:
    """One ingest worker; run as many as the load needs."""

    def __init__(
        self,
        mqtt_url: str,
        database_url: str,
        name: str = "ingest-1",
        batch_size: int = 500,
        flush_s: float = 0.0,
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.counts: Counter[str] = Counter()
        # Bounded, and a full queue blocks paho's thread: the broker then holds the rest, nothing is lost.
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=batch_size * 4)
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._subscribed = threading.Event()
        self._client, self._address, self._props = make_client(
            mqtt_url, client_id=f"patrolnet-{name}", persistent=True, manual_ack=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = lambda client, userdata, message: self._queue.put(message)
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        connect(self._client, self._address, self._props, clean_start=False)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        client.subscribe(f"$share/{SHARE_GROUP}/{UPLINK_FILTER}", qos=1)
        log.info("%s subscribing to %s (session present: %s)", self.name, UPLINK_FILTER, flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata, mid, reason_codes, properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error("%s: the broker refused the subscription: %s", self.name, reason_codes)
            return
        self._subscribed.set()

    def _collect(self) -> list[mqtt.MQTTMessage]:
        try:
            messages = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        # What is already queued joins the batch at once; waiting for more is only worth it when asked for,
        # since under load batches fill by themselves while the previous one is written.
        deadline = time.monotonic() + self.flush_s
        while len(messages) < self.batch_size:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    messages.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
        return messages

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self._collect()
            if not messages:
                continue
            batch = Batch()
            for message in messages:
                decode(message.topic, message.payload, batch, self.name)
            if not self._write(batch, messages):
                return
            for message in messages:
                self._client.ack(message.mid, message.qos)
            self.counts["messages"] += len(messages)

    def _write(self, batch: Batch, messages: list[mqtt.MQTTMessage]) -> bool:
        """Commits a batch, retrying while the database is away; False only when stopping."""
        while not self._stop.is_set():
            try:
                self._commit(batch)
                return True
            except psycopg.OperationalError as exc:
                log.warning("%s: database away, keeping %d messages unacknowledged: %s", self.name, len(batch), exc)
                self._conn = None
                self._stop.wait(1.0)
            except psycopg.Error as exc:
                # One bad row must not hold back the rest: write message by message.
                log.warning("%s: batch refused (%s); writing messages one by one", self.name, exc)
                return self._write_each(messages)
        return False

    def _write_each(self, messages: list[mqtt.MQTTMessage]) -> bool:
        for message in messages:
            single = Batch()
            decode(message.topic, message.payload, single, self.name)
            try:
                self._commit(single)
            except psycopg.OperationalError:
                return self._write(single, [message])
            except psycopg.Error as exc:
                letter = DeadLetter(topic=message.topic, payload=message.payload, reason=str(exc), source=self.name)
                if not self._write(Batch(dead_letters=[letter]), []):
                    return False
        return True

    def _commit(self, batch: Batch) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        with self._conn.transaction():
            self.counts["alert_changes"] += write_batch(self._conn, batch)
        self.counts["dead_letters"] += len(batch.dead_letters)
