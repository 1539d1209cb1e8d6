"""The snapshot dispatcher of an ingest worker: it publishes the centre's snapshot requests to the nodes.

The alert API has no MQTT client; ingest workers do, and their broker role may publish under
``patrolnet/v1/+/commands/#``. Each worker runs one dispatcher thread: it LISTENs for new requests
(``alerts.store.snapshots``), and every ``poll_s`` and at each NOTIFY it expires the requests past their time and
claims those due (new ones, and pending ones published ``again_s`` ago: a node that was offline heard nothing),
then publishes a ``SnapshotCommand`` on the ``snapshot_topic`` of the node that reports the camera. Claims skip
what another worker holds, and a command published twice is answered twice and stored once, so any number of
workers may run. Nothing that goes wrong here (the database away, the broker away) stops the thread or the
worker's writer: the request stays pending and is published in a later round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from alerts.core.models import SnapshotCommand
from alerts.core.protocol import snapshot_topic
from alerts.store import snapshots
from alerts.store.database import RECORD_CHANGES

log = logging.getLogger(__name__)

AGAIN_S = 15.0
"""How long a published request waits for its answer before it is published again."""
POLL_S = 2.0
"""How often the dispatcher looks for what is due besides the NOTIFYs: expiries and publishing again."""

Publish = Callable[[str, bytes], None]


class SnapshotDispatcher:
    """Publishes due snapshot requests with ``publish(topic, payload)`` (QoS 1, the worker's client)."""

    def __init__(
        self, database_url: str, publish: Publish, name: str, again_s: float = AGAIN_S, poll_s: float = POLL_S
    ) -> None:
        self.database_url = database_url
        self.publish = publish
        self.again_s = again_s
        self.poll_s = poll_s
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-snapshots", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {snapshots.NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        self.round(conn)
                        for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                            pass
            except Exception:
                log.exception("snapshot dispatcher: round failed; trying again")
                self._stop.wait(1.0)

    def round(self, conn: psycopg.Connection) -> int:
        """Expires what is past its time and publishes what is due; how many commands it published."""
        with conn.transaction():
            expired = snapshots.expire(conn)
            if expired:
                conn.execute(RECORD_CHANGES, (expired, [snapshots.CHANGE] * len(expired)))
        with conn.transaction():
            due = snapshots.claim_due(conn, self.again_s)
        sent = 0
        for request in due:
            if request.node_id is None:
                log.info("snapshot request %s: no node reports camera %s yet", request.id, request.device)
                continue
            command = SnapshotCommand(request_id=request.id, camera=request.device)
            try:
                self.publish(snapshot_topic(request.site, request.node_id), command.model_dump_json().encode())
            except ValueError as exc:  # a node id unfit for a topic, or paho refusing: the request expires
                log.warning("snapshot request %s: not published: %s", request.id, exc)
                continue
            sent += 1
        self.published += sent
        return sent
