"""The node watchdog: a ``node_offline`` trouble alert when a node goes away, cleared when it is back; an
``uplink_unconfirmed`` one while a node's heartbeat says a message has waited in its spool for ingest's
confirmation longer than ``unconfirmed_after_s`` (messages that reach the broker and never the store: a lost
share, a poison that ingest cannot even dead-letter), cleared when a heartbeat says it is no longer so.

A node is offline when its last will (a retained ``NodeStatus`` with
``online: false``) arrived after its newest heartbeat, or when nothing has
been heard from it for ``missed_heartbeats`` times its heartbeat interval (as
measured between two heartbeats of one node process; ``heartbeat_s`` until
then). Silence counts only once the watchdog has itself been watching, without a failed round, for longer
than that limit: after ingest or the database was away, heartbeats are still on their way and every node
would look silent. The offline alert goes to the operators, and to the fire and police desks as a
coverage notice (alerts.coverage); it clears with the node's next heartbeat or
online status. The unconfirmed one goes to the operators.

Every ingest worker runs a watchdog. A round takes a transaction-scoped
advisory lock and skips when another worker holds it, so however many workers
run, one raises each alert once; it is written with ``write_batch``, the path
of every alert (alert_changes, NOTIFY for the SSE streams, webhooks). Each
round also records the worker's liveness (last batch written, counters) in
``ingest_workers``.

Example:
    >>> from datetime import UTC
    >>> offline_alert_id("node-1", datetime(2026, 1, 1, tzinfo=UTC))
    UUID('389d02b9-f610-500b-b824-a473c481b081')
    >>> place = Place(sub_district="n", community="c", grid="g", site="s")
    >>> offline_batch(place, "node-1", datetime(2026, 1, 1, tzinfo=UTC), "for 300 s", UNCONFIRMED).alerts[0].title
    'Node node-1: uplink messages unconfirmed (for 300 s)'
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field

from alerts.core.models import ROUTES, Alert, Event, EventKind, EventState, Place, Severity
from alerts.coverage import NODE_OFFLINE
from alerts.store.database import WriteBatch, write_batch
from alerts.store.rows import ALERT_COLUMNS, row_to_alert

log = logging.getLogger(__name__)

WATCHDOG_LOCK = 0x77617463  # "watc": one watchdog round at a time, across every ingest worker


@dataclass(frozen=True)
class NodeTrouble:
    """A trouble the watchdog raises in a node's name: its type and the titles of its raise and clear."""

    type: str
    raised: str
    cleared: str

    @property
    def namespace(self) -> UUID:
        return uuid5(NAMESPACE_URL, f"https://patrolnet/{self.type}")


OFFLINE = NodeTrouble(NODE_OFFLINE, "Node {node} offline ({why})", "Node {node} back online")
UNCONFIRMED = NodeTrouble(
    "uplink_unconfirmed", "Node {node}: uplink messages unconfirmed ({why})", "Node {node}: uplink confirmed again"
)

_NODES = """
SELECT coalesce(n.node_id, s.node_id), coalesce(n.sub_district, s.sub_district),
       coalesce(n.community, s.community), coalesce(n.grid, s.grid), coalesce(n.site, s.site),
       coalesce(s.online IS FALSE AND s.received_at > coalesce(n.received_at, '-infinity'), false),
       extract(epoch FROM now() - greatest(n.received_at, CASE WHEN s.online THEN s.received_at END)),
       %s * coalesce(n.heartbeat_interval_s, %s), (n.counters->>'oldest_unconfirmed_s')::float8
FROM nodes n FULL JOIN node_status s ON s.node_id = n.node_id"""

_OPEN = f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.type = ANY(%s) AND a.active"

_LIVENESS = """
INSERT INTO ingest_workers (name, last_batch_at, counters) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE SET last_batch_at = EXCLUDED.last_batch_at, counters = EXCLUDED.counters,
    seen_at = now()"""


class WatchdogSettings(BaseModel):
    """When the centre calls a node offline."""

    missed_heartbeats: float = Field(
        default=3.0, gt=1, title="Missed heartbeats", description="Offline after this many heartbeat intervals."
    )
    heartbeat_s: float = Field(
        default=30.0,
        gt=0,
        title="Assumed heartbeat interval",
        description="Seconds, for a node whose interval two heartbeats have not measured yet.",
    )
    check_s: float = Field(default=1.0, gt=0, title="Check every", description="Seconds between two rounds.")
    unconfirmed_after_s: float = Field(
        default=120.0,
        gt=0,
        title="Unconfirmed after",
        description="Trouble when a node's oldest message unconfirmed by ingest is older than this, in seconds "
        "(the node sends it again every 10 s to 5 min meanwhile).",
    )


def offline_alert_id(node_id: str, since: datetime, trouble: NodeTrouble = OFFLINE) -> UUID:
    """The id of the alert of ``trouble`` (the outage) of ``node_id`` noticed at ``since``."""
    return uuid5(trouble.namespace, f"{node_id}/{since.isoformat()}")


def dedup_key(place: Place, node_id: str, trouble: NodeTrouble = OFFLINE) -> str:
    return "/".join((place.site, "", EventKind.TROUBLE, trouble.type, node_id))


def _event(
    alert_id: UUID, place: Place, node_id: str, state: EventState, now: datetime, why: str, trouble: NodeTrouble
) -> Event:
    title = (trouble.raised if state is EventState.START else trouble.cleared).format(node=node_id, why=why)
    return Event(
        id=uuid5(alert_id, state),
        ts=now,
        kind=EventKind.TROUBLE,
        type=trouble.type,
        state=state,
        severity=Severity.MAJOR,
        place=place,
        source=node_id,
        subject=node_id,
        title=title,
        attributes={"node": node_id, "reason": why},
    )


def offline_batch(place: Place, node_id: str, now: datetime, why: str, trouble: NodeTrouble = OFFLINE) -> WriteBatch:
    """The event and alert that say a node went offline (or has the other ``trouble``)."""
    alert_id = offline_alert_id(node_id, now, trouble)
    event = _event(alert_id, place, node_id, EventState.START, now, why, trouble)
    alert = Alert(
        id=alert_id,
        ts=now,
        kind=EventKind.TROUBLE,
        type=trouble.type,
        severity=Severity.MAJOR,
        place=place,
        source=node_id,
        title=event.title,
        route=ROUTES[EventKind.TROUBLE],
        dedup_key=dedup_key(place, node_id, trouble),
        last_seen=now,
        last_event_id=event.id,
        attributes=event.attributes,
    )
    return WriteBatch(events=[event], alerts=[alert])


def back_online_batch(alert: Alert, node_id: str, now: datetime, trouble: NodeTrouble = OFFLINE) -> WriteBatch:
    """The event and the cleared copy of an open node_offline (or other ``trouble``) alert."""
    event = _event(alert.id, alert.place, node_id, EventState.END, now, "back", trouble)
    cleared = alert.model_copy(
        update={
            "active": False,
            "cleared_at": now,
            "last_seen": now,
            "count": alert.count + 1,
            "revision": alert.revision + 1,
            "last_event_id": event.id,
        }
    )
    return WriteBatch(events=[event], alerts=[cleared])


def _turn(
    batch: WriteBatch,
    open_alert: Alert | None,
    place: Place,
    node: str,
    now: datetime,
    why: str | None,
    trouble: NodeTrouble,
) -> int:
    """Adds to ``batch`` the raise (``why`` set, none open) or the clear (``why`` None, one open); 1 if it did."""
    if why is not None and open_alert is None:
        log.warning("node %s: %s: %s", node, trouble.type, why)
        found = offline_batch(place, node, now, why, trouble)
    elif why is None and open_alert is not None:
        log.info("node %s: %s over", node, trouble.type)
        stored = Alert.model_validate(open_alert.model_dump(include=set(Alert.model_fields)))
        found = back_online_batch(stored, node, now, trouble)
    else:
        return 0
    batch.events += found.events
    batch.alerts += found.alerts
    return 1


def check_nodes(conn: psycopg.Connection, settings: WatchdogSettings, watching_s: float = float("inf")) -> int:
    """One watchdog round in its own transaction; how many alerts it raised or cleared (0 if another runs).
    ``watching_s``: how long this watchdog has run rounds without a failure."""
    changed = 0
    with conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s), now()", (WATCHDOG_LOCK,)).fetchone()
        if locked is None or not locked[0]:
            return 0
        now = locked[1]
        rows = conn.execute(_NODES, (settings.missed_heartbeats, settings.heartbeat_s)).fetchall()
        troubles = [OFFLINE.type, UNCONFIRMED.type]
        open_alerts = {a.dedup_key: a for a in map(row_to_alert, conn.execute(_OPEN, (troubles,)).fetchall())}
        batch = WriteBatch()
        for node_id, sub_district, community, grid, site, will, silent_s, limit_s, unconfirmed_s in rows:
            place = Place(sub_district=sub_district, community=community, grid=grid, site=site)
            stale = silent_s is not None and silent_s > limit_s and watching_s > limit_s
            why = "last will" if will else f"silent for {silent_s:.0f} s" if stale else None
            offline = open_alerts.get(dedup_key(place, node_id))
            changed += _turn(batch, offline, place, node_id, now, why, OFFLINE)
            late = unconfirmed_s is not None and unconfirmed_s > settings.unconfirmed_after_s
            why = f"the oldest waits for {unconfirmed_s:.0f} s" if late else None
            unconfirmed = open_alerts.get(dedup_key(place, node_id, UNCONFIRMED))
            changed += _turn(batch, unconfirmed, place, node_id, now, why, UNCONFIRMED)
        if changed:
            write_batch(conn, batch)
    return changed


class Watchdog:
    """Runs ``check_nodes`` every ``check_s`` in a thread, and records the worker's liveness."""

    def __init__(
        self,
        database_url: str,
        name: str,
        settings: WatchdogSettings | None = None,
        liveness: Callable[[], tuple[datetime | None, dict[str, Any]]] | None = None,
    ) -> None:
        self.database_url = database_url
        self.name = name
        self.settings = settings or WatchdogSettings()
        self.rounds = 0
        self._liveness = liveness
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive() or self._stop.is_set()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        watching_since = time.monotonic()
        while not self._stop.wait(self.settings.check_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.database_url, autocommit=True)
                check_nodes(conn, self.settings, time.monotonic() - watching_since)
                if self._liveness is not None:
                    last_batch_at, counters = self._liveness()
                    conn.execute(_LIVENESS, (self.name, last_batch_at, Jsonb(counters)))
                self.rounds += 1
            except psycopg.OperationalError as exc:
                log.warning("%s watchdog: database away: %s", self.name, exc)
                conn = None
                watching_since = time.monotonic()
            except Exception:  # a bad row must not end the watch over every node
                log.exception("%s watchdog round failed; next round in %.0f s", self.name, self.settings.check_s)
                if conn is not None:
                    conn.close()
                conn = None
                watching_since = time.monotonic()
        if conn is not None:
            conn.close()
