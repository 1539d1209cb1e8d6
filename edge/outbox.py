"""The edge outbox: a local SQLite spool drained to the uplink broker at QoS 1.

A message is written to disk before anything is sent and deleted only when the
broker acknowledges it (PUBACK), so a dropped uplink, a broker restart or a
node crash loses nothing; it may send a message twice, which the central
ingest absorbs because every insert is idempotent by UUID. The number of
unacknowledged messages is bounded, since paho runs out of message ids at
65,535 and an unbounded window only fills the broker's queue.

Example:
    >>> import tempfile, pathlib
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3")
    >>> spool.put("patrolnet/v1/s/events", b"{}")
    1
    >>> spool.pending()
    1
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from ingest.mqtt import connect, make_client

log = logging.getLogger(__name__)


class Spool:
    """A durable FIFO of (topic, payload) messages."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
                " payload BLOB NOT NULL)"
            )

    def put(self, topic: str, payload: bytes) -> int:
        with self._lock:
            return self._db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload)).lastrowid

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()

    def delete(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


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
        self._inflight: dict[int, int] = {}
        self._early_acks: set[int] = set()
        self._cursor = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._connected = False
        self._client, self._address, self._props = make_client(url, client_id)
        self._client.max_inflight_messages_set(max_inflight)
        self._status = (status_topic, online) if status_topic else None
        if status_topic:
            self._client.will_set(status_topic, offline, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)

    def start(self) -> None:
        connect(self._client, self._address, self._props)
        self._thread.start()

    def send(self, topic: str, payload: bytes) -> None:
        """Spools a message; it goes out as soon as the broker can take it."""
        self.spool.put(topic, payload)
        self._notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()

    def _notify(self) -> None:
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
                # Seq 0 is no spooled message: its PUBACK deletes nothing. It cannot come before this returns.
                self._inflight[info.mid] = 0
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
                self._early_acks.add(mid)
            else:
                self._acked(seq)
            self._wake.notify_all()

    def _acked(self, seq: int) -> None:
        self.spool.delete(seq)
        self.acked += 1

    def _wait_for_room(self) -> int:
        """Blocks until connected with room in the window; 0 when stopping."""
        with self._wake:
            while not self._stopping and (not self._connected or len(self._inflight) >= self.max_inflight):
                self._wake.wait(timeout=1.0)
            return 0 if self._stopping else self.max_inflight - len(self._inflight)

    def _run(self) -> None:
        while room := self._wait_for_room():
            batch = self.spool.after(self._cursor, room)
            if not batch:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            for seq, topic, payload in batch:
                # Not under self._wake: paho calls on_publish holding its own lock, which publish() needs too.
                info = self._client.publish(topic, payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning("uplink publish failed (%s); will retry", mqtt.error_string(info.rc))
                    with self._wake:
                        self._wake.wait(timeout=1.0)
                    break
                self._cursor = seq
                with self._wake:
                    if info.mid in self._early_acks:
                        self._early_acks.discard(info.mid)
                        self._acked(seq)
                    else:
                        self._inflight[info.mid] = seq
