"""The store: migrations and idempotent batch writes.

Every insert is keyed by the UUID given where the object was born, so a message
delivered twice makes one row. Alerts keep the copy with the highest revision,
each copy links the alert to its newest event, and every change is appended to
``alert_changes`` in commit order (by ``record_alert_changes``, migration 0006, the one
definition every writer calls), which is what the SSE stream resumes from. A node writes
only for its own site: a copy of an alert another site raised, or a heartbeat or status
naming a node another site registered, becomes a dead letter with the reason.
The columns written are the models' fields, declared once in ``alerts.store.schema``.
Bulk rows are COPied into a temporary staging table, then moved with one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per table, which keeps them
idempotent; ``bench/bench_store.py`` measured that about 1.4 times as fast as
executemany and 1.25 times as fast as one INSERT of unnest()ed arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from alerts.core.models import Alert, DeadLetter, Event, Heartbeat, NodeStatus, Place, Reading, Snapshot
from alerts.core.protocol import encode, uplink_topic
from alerts.coverage import with_coverage
from alerts.identity import foreign_copy, foreign_node
from alerts.store import snapshots as snapshot_requests
from alerts.store import timescale
from alerts.store.schema import ALERTS, DEAD_LETTERS, EVENTS, READINGS, Column, model_columns, names, values_of

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "alert_changes"
"""What ``record_alert_changes`` NOTIFYs at commit, and the SSE streams LISTEN on."""
RECORD_CHANGES = "SELECT record_alert_changes(%s, %s)"
"""Logs changes (alert ids, change kinds) in commit order and wakes the streams: migration 0006, the one
definition that ingest, desks and citizen reports all call."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("alerts.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conninfo: str, retention: timescale.Retention | None = None) -> list[str]:
    """Applies the migrations not yet applied, each in its own transaction, then the TimescaleDB plan
    where the extension can be enabled (plain tables where not, see ``timescale.prepare``); returns the
    names of the migrations applied."""
    applied = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (timescale.MIGRATE_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                    continue
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                log.info("applied migration %s", name)
                applied.append(name)
    # On a connection of its own: a TimescaleDB that is installed but not preloaded closes it.
    timescale.prepare(conninfo, retention or timescale.Retention.from_env())
    return applied


def _place_values(place: Place) -> tuple[str, str, str, str, str | None]:
    return (place.sub_district, place.community, place.grid, place.site, place.device)


FEW_ROWS = 50
"""Up to this many rows for a table, ``copy_insert`` inserts them in one pipelined statement instead of staging a
COPY (three round trips), and a batch of no more rows in all is ``small``: what an alarm is."""


@dataclass
class WriteBatch:
    """What one transaction writes."""

    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    statuses: list[NodeStatus] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.events) + len(self.alerts) + len(self.readings) + len(self.dead_letters)
                + len(self.heartbeats) + len(self.statuses) + len(self.snapshots))  # fmt: skip

    def small(self) -> bool:
        """Whether ``write_batch`` writes it without COPY (no table gets more than FEW_ROWS rows, dead letters for
        refused claims included), so it may run in pipeline mode, which has no COPY."""
        return len(self) <= FEW_ROWS


PLACE_COLUMNS = names(model_columns(Place))
EVENT_COLUMNS = names(EVENTS.written)
READING_COLUMNS = names(READINGS.written)
_ALERT_EVENT_COLUMNS = (Column("alert_id", "uuid", False), Column("event_id", "uuid", False))


def copy_statements(table: str, columns: Sequence[str]) -> tuple[str, str, str]:
    """The staging table, the COPY into it and the INSERT out of it, for ``copy_insert``.

    The staging table empties itself at commit, so it only ever holds the current batch.

    >>> print(*copy_statements("t", ["id", "v"]), sep="\\n")
    CREATE TEMP TABLE IF NOT EXISTS t_in (LIKE t INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
    COPY t_in (id, v) FROM STDIN
    INSERT INTO t (id, v) SELECT id, v FROM t_in ON CONFLICT DO NOTHING
    """
    names = ", ".join(columns)
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {table}_in (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        f"COPY {table}_in ({names}) FROM STDIN",
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_in ON CONFLICT DO NOTHING",
    )


def insert_statement(table: str, columns: Sequence[str]) -> str:
    """One row's idempotent INSERT, for a writer of single rows.

    >>> insert_statement("t", ["id", "v"])
    'INSERT INTO t (id, v) VALUES (%s, %s) ON CONFLICT DO NOTHING'
    """
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT DO NOTHING"
    )


def copy_insert(cur: psycopg.Cursor, table: str, columns: Sequence[Column], rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts rows not yet there, by COPY; in the caller's transaction (the staging table needs one). A few rows
    (FEW_ROWS) go in one pipelined INSERT: fewer round trips, and no COPY, which pipeline mode refuses.

    The rows are copied into the table itself first, under a savepoint: a batch is new but for a message sent
    again (its confirmation lost), and staging every batch to insert it past conflicts cost PostgreSQL half as
    much again (7.5 us a reading, not 5.0, measured). A batch that hits a row already there goes the staged way.
    The COPY is binary, typed by the columns: no value is written out as text (ingest's CPU 1.2 us a reading, not
    3.3, measured).
    """
    if not rows:
        return
    named = names(columns)
    if len(rows) <= FEW_ROWS:
        cur.executemany(insert_statement(table, named), rows)
        return
    types = [c.type for c in columns]
    try:
        with cur.connection.transaction():
            _copy(cur, f"COPY {table} ({', '.join(named)}) FROM STDIN", types, rows)
        return
    except psycopg.errors.UniqueViolation:
        log.info("%s: a batch of %d rows holds some stored before; inserting the others", table, len(rows))
    create, copy_sql, insert = copy_statements(table, named)
    cur.execute(create)
    _copy(cur, copy_sql, types, rows)
    cur.execute(insert)


def _copy(cur: psycopg.Cursor, statement: str, types: list[str], rows: Sequence[tuple[Any, ...]]) -> None:
    with cur.copy(f"{statement} (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


event_row = values_of(EVENTS.written)
"""An Event's values for EVENT_COLUMNS."""
reading_row = values_of(READINGS.written)
"""A Reading's values for READING_COLUMNS."""
_dead_letter_row = values_of(DEAD_LETTERS.written)


_alert_row = values_of(ALERTS.written)
_ALERT_WRITTEN = names(ALERTS.written)
_ALERT_IDENTITY = ("id", "ts", "kind", "type", "route", *PLACE_COLUMNS, "source", "dedup_key")
"""What an alert is, which a later copy never changes."""
# Desks own status (ALERTS.centre_sets); the edge owns the rest. A late, older copy changes nothing.
_UPSERT_ALERT = f"""
INSERT INTO alerts ({", ".join(_ALERT_WRITTEN)})
VALUES ({", ".join(["%s"] * len(_ALERT_WRITTEN))})
ON CONFLICT (id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _ALERT_WRITTEN if c not in _ALERT_IDENTITY)}, updated_at = now()
WHERE alerts.revision < EXCLUDED.revision AND alerts.site = EXCLUDED.site
RETURNING id, (xmax = 0) AS inserted, active"""

# The rotation entry covering the alert's local time in the entry's timezone; a range ending before
# it starts runs past midnight into the next weekday, and a range that starts where it ends is all day.
_SET_ON_DUTY = """
UPDATE alerts a SET (on_duty, on_duty_contact) = (
    SELECT d.person, d.contact FROM duty_rotation d, LATERAL (SELECT a.ts AT TIME ZONE d.timezone AS t) l
    WHERE d.sub_district = a.sub_district AND d.community = a.community AND d.grid = a.grid
      AND CASE WHEN d.starts = d.ends THEN extract(isodow FROM l.t) = d.weekday
               WHEN d.starts < d.ends THEN extract(isodow FROM l.t) = d.weekday
                                           AND l.t::time >= d.starts AND l.t::time < d.ends
               ELSE (extract(isodow FROM l.t) = d.weekday AND l.t::time >= d.starts)
                    OR (extract(isodow FROM l.t) = d.weekday %% 7 + 1 AND l.t::time < d.ends) END
    ORDER BY d.created_at, d.id LIMIT 1)
WHERE a.id = ANY(%s)"""

# Two heartbeats of one node process measure its heartbeat interval; a restart's gap measures nothing. A node
# belongs to the site that registered it (_claims_kept).
_UPSERT_NODE = """
INSERT INTO nodes (node_id, sub_district, community, grid, site, started_at, heartbeat_at, counters)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (node_id) DO UPDATE SET
    sub_district = EXCLUDED.sub_district, community = EXCLUDED.community, grid = EXCLUDED.grid,
    site = EXCLUDED.site, started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
    counters = EXCLUDED.counters, received_at = now(),
    heartbeat_interval_s = CASE WHEN nodes.started_at = EXCLUDED.started_at
        THEN extract(epoch FROM EXCLUDED.heartbeat_at - nodes.heartbeat_at) ELSE nodes.heartbeat_interval_s END
WHERE nodes.heartbeat_at < EXCLUDED.heartbeat_at AND nodes.site = EXCLUDED.site"""

_ALERT_SITES = "SELECT id, site FROM alerts WHERE id = ANY(%s)"
_NODE_SITES = "SELECT node_id, site FROM nodes WHERE node_id = ANY(%s)"

# Last arrival wins (see migration 0004), from the node's own site.
_UPSERT_STATUS = """
INSERT INTO node_status (node_id, sub_district, community, grid, site, online, status_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (node_id) DO UPDATE SET
    sub_district = EXCLUDED.sub_district, community = EXCLUDED.community, grid = EXCLUDED.grid,
    site = EXCLUDED.site, online = EXCLUDED.online, status_at = EXCLUDED.status_at, received_at = now()
WHERE node_status.site = EXCLUDED.site"""

_UPSERT_DEVICE = """
INSERT INTO devices (site, device, node_id, sub_district, community, grid, type, online, last_seen, detail,
                     heartbeat_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (site, device) DO UPDATE SET
    node_id = EXCLUDED.node_id, type = EXCLUDED.type, online = EXCLUDED.online, last_seen = EXCLUDED.last_seen,
    detail = EXCLUDED.detail, heartbeat_at = EXCLUDED.heartbeat_at
WHERE devices.heartbeat_at < EXCLUDED.heartbeat_at"""


def _alert_change(inserted: bool, active: bool) -> str:
    if inserted:
        return "raised"
    return "updated" if active else "cleared"


Claim = TypeVar("Claim", Alert, Heartbeat, NodeStatus)


def _claims_kept(
    cur: psycopg.Cursor,
    channel: str,
    owners_sql: str,
    sent: list[Claim],
    key: Callable[[Claim], Any],
    foreign: Callable[[str | None, Claim], str | None],
) -> tuple[list[Claim], list[DeadLetter]]:
    """What may be written of ``sent``, and dead letters for what speaks for a thing (an alert, a node) that
    another site owns: the site ``owners_sql`` finds stored with its key, or the first in the batch to claim it.
    The upserts' site guards cover a claim committed meanwhile by a concurrent worker."""
    if not sent:
        return [], []
    return _judged(channel, dict(cur.execute(owners_sql, ([key(item) for item in sent],))), sent, key, foreign)


def _judged(
    channel: str,
    owners: dict[Any, str],
    sent: list[Claim],
    key: Callable[[Claim], Any],
    foreign: Callable[[str | None, Claim], str | None],
) -> tuple[list[Claim], list[DeadLetter]]:
    """``_claims_kept`` given the stored ``owners`` (key: site); a key not stored goes to the first in ``sent``."""
    kept, refused = [], []
    for item in sent:
        reason = foreign(owners.setdefault(key(item), item.place.site), item)
        if reason is None:
            kept.append(item)
        else:
            log.warning("dead letter: %s", reason)
            topic = uplink_topic(item.place.site, channel)
            refused.append(DeadLetter(topic=topic, payload=encode(channel, item), reason=reason, source="store"))
    return kept, refused


class _SentAlerts:
    """A batch's alerts, in the order of their revisions: who owns each id, and the upserts of every copy, sent
    together and read once (in pipeline mode, one wait for the database where reading the owners first took two).

    Sending the copies ``_judged`` refuses does nothing: the upsert's site guard leaves an alert another site
    raised as it is. That holds for an id new to the store that two sites claim in one batch too, because the
    claims are judged in the order the upserts run: the first copy inserts it, and the guard stops the other."""

    def __init__(self, conn: psycopg.Connection, cur: psycopg.Cursor, alerts: list[Alert]) -> None:
        self.sent = sorted(alerts, key=lambda a: a.revision)
        self._covered = with_coverage(cur, self.sent)
        self._owners = conn.execute(_ALERT_SITES, ([a.id for a in self.sent],)) if alerts else None
        self._many = len(alerts) > FEW_ROWS
        self._rows = self._upsert(conn)

    def _upsert(self, conn: psycopg.Connection) -> list[psycopg.Cursor]:
        """One statement per copy (two copies of one alert cannot share an ON CONFLICT DO UPDATE). A few go one by
        one, as pipeline mode takes them (it loses executemany's returned rows); many in one executemany,
        pipelined itself."""
        if not self._many:
            return [conn.execute(_UPSERT_ALERT, _alert_row(a)) for a in self._covered]
        cur = conn.cursor()
        cur.executemany(_UPSERT_ALERT, [_alert_row(a) for a in self._covered], returning=True)
        return [cur]

    def _upserted(self) -> list[tuple[Any, ...] | None]:
        """Each copy's (id, inserted, active), None where the store kept a copy as new or newer, or another
        site's."""
        if self._many:
            rows: list[tuple[Any, ...] | None] = []
            (cur,) = self._rows
            while True:
                rows.append(cur.fetchone())
                if not cur.nextset():
                    return rows
        return [cur.fetchone() for cur in self._rows]

    def read(self) -> tuple[list[DeadLetter], list[tuple[Alert, tuple[Any, ...] | None]]]:
        """Dead letters for the copies refused, and each kept copy (as written) with its upsert's row."""
        if self._owners is None:
            return [], []
        owners: dict[Any, str] = dict(self._owners.fetchall())
        kept, refused = _judged("alerts", owners, self.sent, lambda a: a.id, foreign_copy)
        kept_ids = {id(a) for a in kept}  # the very objects of self.sent: copies of one alert may be equal
        written = zip(self.sent, self._covered, self._upserted(), strict=True)
        for cur in (self._owners, *self._rows):
            cur.close()
        return refused, [(covered, row) for sent, covered, row in written if id(sent) in kept_ids]


def _write_alerts(cur: psycopg.Cursor, written: list[tuple[Alert, tuple[Any, ...] | None]]) -> int:
    """The rest of the kept alerts' writing: links to their events, who is on duty, the changes for the streams."""
    changes, raised = [], []
    for _, row in written:
        if row is not None:
            changes.append((row[0], _alert_change(row[1], row[2])))
            if row[1]:
                raised.append(row[0])
    links = {(a.id, a.last_event_id) for a, _ in written if a.last_event_id is not None}
    copy_insert(cur, "alert_events", _ALERT_EVENT_COLUMNS, sorted(links))
    if raised:
        cur.execute(_SET_ON_DUTY, (raised,))
    if changes:
        cur.execute(RECORD_CHANGES, ([id_ for id_, _ in changes], [change for _, change in changes]))
    return len(changes)


def _node_counters(h: Heartbeat) -> dict[str, float]:
    """The counters kept for a node: its own, and what waits unconfirmed in its spool when it says so."""
    said = {"unconfirmed": h.unconfirmed, "oldest_unconfirmed_s": h.oldest_unconfirmed_s}
    return {**h.counters, **{name: value for name, value in said.items() if value is not None}}


def _write_heartbeats(cur: psycopg.Cursor, heartbeats: list[Heartbeat]) -> None:
    ordered = sorted(heartbeats, key=lambda h: h.ts)
    cur.executemany(
        _UPSERT_NODE,
        [(h.node_id, *_place_values(h.place)[:4], h.started_at, h.ts, Jsonb(_node_counters(h))) for h in ordered],
    )
    cur.executemany(
        _UPSERT_DEVICE,
        [
            (
                h.place.site,
                d.device,
                h.node_id,
                *_place_values(h.place)[:3],
                d.type,
                d.online,
                d.last_seen,
                Jsonb(d.detail),
                h.ts,
            )
            for h in ordered
            for d in h.devices
        ],
    )


_INSERT_EVENT = insert_statement("events", EVENT_COLUMNS)
_LINK_EVENT = insert_statement("alert_events", ("alert_id", "event_id"))


async def write_alert(conn: psycopg.AsyncConnection, alert: Alert, events: Sequence[Event]) -> int:
    """Writes an alert born in the centre (a citizen report) and its events, in the caller's transaction and by
    write_batch's statements, one row at a time (COPY's staging is not worth it for a few rows): the events, the
    alert, its link to its newest event, who is on duty when it is raised, and its change for the streams.
    Returns how many changes it logged (0 when the store holds this copy or a newer one)."""
    for event in events:
        await conn.execute(_INSERT_EVENT, event_row(event))
    row = await (await conn.execute(_UPSERT_ALERT, _alert_row(alert))).fetchone()
    if alert.last_event_id is not None:
        await conn.execute(_LINK_EVENT, (alert.id, alert.last_event_id))
    if row is None:
        return 0
    id_, inserted, active = row
    if inserted:
        await conn.execute(_SET_ON_DUTY, ([id_],))
    await conn.execute(RECORD_CHANGES, ([id_], [_alert_change(inserted, active)]))
    return 1


def write_batch(conn: psycopg.Connection, batch: WriteBatch) -> int:
    """Writes a batch in the caller's transaction; returns how many alert changes it logged."""
    with conn.cursor() as cur:
        alerts = _SentAlerts(conn, cur, batch.alerts)
        heartbeats, foreign = _claims_kept(
            cur, "heartbeats", _NODE_SITES, batch.heartbeats, lambda h: h.node_id, foreign_node
        )
        statuses, forged = _claims_kept(cur, "status", _NODE_SITES, batch.statuses, lambda s: s.node_id, foreign_node)
        pictured, unasked = snapshot_requests.store(cur, batch.snapshots)
        refused, written = alerts.read()
        copy_insert(cur, "events", EVENTS.written, [event_row(e) for e in batch.events])
        copy_insert(cur, "readings", READINGS.written, [reading_row(r) for r in batch.readings])
        copy_insert(
            cur,
            "dead_letters",
            DEAD_LETTERS.written,
            [_dead_letter_row(d) for d in [*batch.dead_letters, *refused, *foreign, *forged, *unasked]],
        )
        if heartbeats:
            _write_heartbeats(cur, heartbeats)
        if statuses:
            cur.executemany(
                _UPSERT_STATUS, [(s.node_id, *_place_values(s.place)[:4], s.online, s.ts) for s in statuses]
            )
        if pictured:
            cur.execute(RECORD_CHANGES, (pictured, [snapshot_requests.CHANGE] * len(pictured)))
        return (_write_alerts(cur, written) if written else 0) + len(pictured)
