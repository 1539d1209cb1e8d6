"""The alert aggregate's queries for the API: a page of alerts, one alert's events, snapshots and audit trail,
a desk's status change. Route handlers validate, call these and shape the answer; the filter clauses come from
``alerts.store.queries``, and a status change is logged for the streams through ``record_alert_changes``
(``alerts.store.database.RECORD_CHANGES``), the one definition every writer calls.

Example:
    >>> from alerts.core.models import AlertStatus
    >>> ACTIONS["resolve"][1], AlertStatus.ACKNOWLEDGED in ACTIONS["resolve"][0]
    (<AlertStatus.RESOLVED: 'resolved'>, True)
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from alerts.auth import Principal
from alerts.core.models import AlertStatus, EventKind, EventState, Place, Severity
from alerts.store.database import RECORD_CHANGES
from alerts.store.queries import AlertPage, where
from alerts.store.rows import ALERT_COLUMNS, ALERT_JSON, StoredAlert, row_to_alert
from alerts.store.schema import EVENTS, Column, select_list

log = logging.getLogger(__name__)

ACTIONS: dict[str, tuple[tuple[AlertStatus, ...], AlertStatus]] = {
    "acknowledge": ((AlertStatus.NEW,), AlertStatus.ACKNOWLEDGED),
    "resolve": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.RESOLVED),
    "false-alarm": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.FALSE_ALARM),
}
"""Which statuses each desk action may move an alert from, and to."""


class EventRow(NamedTuple):
    """One event of an alert, without its snapshot's bytes: fields of Event (their columns come from
    ``alerts.store.schema``), then whether it has a snapshot."""

    id: UUID
    ts: datetime
    kind: EventKind
    type: str
    state: EventState
    severity: Severity
    place: Place
    source: str
    title: str
    attributes: dict[str, Any]
    has_snapshot: bool


class HistoryRow(NamedTuple):
    """One desk action on an alert: who (a key's or a person's name, and the person's id when a person acted)."""

    at: datetime
    actor: str
    action: str
    from_status: AlertStatus
    to_status: AlertStatus
    note: str
    person_id: UUID | None


_EVENT_ROW = EVENTS.of(EventRow._fields[:-1])
_HAS_SNAPSHOT = Column("has_snapshot", "boolean", nullable=False, field="has_snapshot")
_read_event = EVENTS.reader([*_EVENT_ROW, _HAS_SNAPSHOT], EventRow)
_EVENTS_SQL = f"""
SELECT {select_list(_EVENT_ROW, "e")}, e.snapshot IS NOT NULL AS has_snapshot
FROM (SELECT event_id FROM alert_events WHERE alert_id = %s ORDER BY linked_at DESC LIMIT %s) l
JOIN events e ON e.id = l.event_id
ORDER BY e.ts, e.id"""

_HISTORY_SQL = """
SELECT at, actor, action, from_status, to_status, note, person_id FROM alert_history WHERE alert_id = %s
ORDER BY at, id"""

_SNAPSHOTS = """FROM alert_events l JOIN events e ON e.id = l.event_id
WHERE l.alert_id = a.id AND e.snapshot IS NOT NULL ORDER BY e.ts, e.id"""
PICTURE_COLUMNS = (
    f"ARRAY(SELECT uuid_send(e.id) || substring(e.snapshot FROM 1 FOR 8) {_SNAPSHOTS}),"
    " ARRAY(SELECT c.id FROM clips c WHERE c.alert_id = a.id AND c.complete ORDER BY c.started_at)"
)
"""Two columns of the alert of alias ``a``: for each of its events that has a snapshot, oldest first, the event's id
(16 bytes) followed by the snapshot's first 8 bytes (which tell its type), in one scan; and the ids of its complete
clips, in the order they were recorded."""

ALERT_VERSION = "a.id::text || ':' || a.xmin::text"
"""One state of the alert of alias ``a``, as text: every UPDATE writes a new row version, stamped with its
transaction's id (``xmin``), so every change to any of its columns names a new state, cheaply, where its JSON costs
the database about 10 us an alert. (Two states in one transaction share an xmin, but only the last is ever seen.)"""

# The lock an UPDATE takes, no more: inserts elsewhere that reference the alert (links, changes) go on.
_LOCK_STATUS_SQL = "SELECT status FROM alerts WHERE id = %s FOR NO KEY UPDATE"

_SET_STATUS_SQL = f"""
UPDATE alerts a SET status = %s, status_by = %s, status_at = now(), updated_at = now()
WHERE a.id = %s RETURNING {ALERT_COLUMNS}"""

ADD_HISTORY_SQL = """
INSERT INTO alert_history (alert_id, actor, action, from_status, to_status, note, person_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)"""

_ASSIGN_SQL = f"""
UPDATE alerts a SET assignee = %s, assignee_id = %s, updated_at = now() WHERE a.id = %s RETURNING {ALERT_COLUMNS}"""


def page_sql(
    columns: str, page: AlertPage, who: Principal, before: tuple[datetime, UUID] | None
) -> tuple[str, list[Any]]:
    """The SELECT of ``columns`` (on alias ``a``) for a page of alerts, one more than ``page.limit``."""
    clause, params = where(page, who)
    if before is not None:
        clause += " AND (a.ts, a.id) < (%s, %s)"
        params += list(before)
    # The page is chosen first and only its rows are selected (as JSON too) once: never a row the LIMIT drops. Its
    # xmin goes along (``*`` leaves system columns out) for ALERT_VERSION.
    sql = (
        f"SELECT {columns} FROM (SELECT a.*, a.xmin FROM alerts a WHERE {clause}"
        " ORDER BY a.ts DESC, a.id DESC LIMIT %s) a ORDER BY a.ts DESC, a.id DESC"
    )
    return sql, [*params, page.limit + 1]


async def alerts_page(
    pool: AsyncConnectionPool, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None
) -> tuple[list[StoredAlert], bool]:
    """Up to ``page.limit`` alerts the caller may see, newest first, older than ``before`` (time, id) when given;
    and whether more follow."""
    rows, more = await alerts_page_rows(pool, who, page, before, ALERT_COLUMNS)
    return [row_to_alert(r) for r in rows], more


async def alerts_page_json(
    pool: AsyncConnectionPool, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None
) -> tuple[list[str], tuple[datetime, UUID] | None]:
    """The page of ``alerts_page`` as each alert's JSON (``ALERT_JSON``), the database writing it; and the
    (time, id) of its last alert when more follow, else None."""
    rows, more = await alerts_page_rows(pool, who, page, before, f"{ALERT_JSON}, a.ts, a.id")
    return [row[0] for row in rows], (rows[-1][1], rows[-1][2]) if more else None


async def alerts_page_rows(
    pool: AsyncConnectionPool, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None, columns: str
) -> tuple[list[tuple[Any, ...]], bool]:
    """The page of ``alerts_page`` as rows of ``columns`` (on alias ``a``), and whether more follow."""
    sql, params = page_sql(columns, page, who, before)
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()
    return rows[: page.limit], len(rows) > page.limit


async def alerts_json(pool: AsyncConnectionPool, ids: list[UUID]) -> dict[UUID, tuple[str, str]]:
    """Each alert's ``ALERT_VERSION`` and ``ALERT_JSON`` by its id; an id no longer stored is left out."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(f"SELECT a.id, {ALERT_VERSION}, {ALERT_JSON} FROM alerts a WHERE a.id = ANY(%s)", (ids,))
        ).fetchall()
    return {id_: (version, json) for id_, version, json in rows}


async def alert_events(pool: AsyncConnectionPool, alert_id: UUID, newest: int = 200) -> list[EventRow]:
    """The alert's ``newest`` events, oldest first."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(_EVENTS_SQL, (alert_id, newest))).fetchall()
    return [_read_event(row) for row in rows]


async def alert_history(pool: AsyncConnectionPool, alert_id: UUID) -> list[HistoryRow]:
    """What desks did with the alert, oldest first."""
    async with pool.connection() as conn:
        rows = await (await conn.execute(_HISTORY_SQL, (alert_id,))).fetchall()
    return [HistoryRow(*row) for row in rows]


async def alert_pictures(pool: AsyncConnectionPool, alert_id: UUID) -> tuple[list[bytes], list[UUID]]:
    """``PICTURE_COLUMNS`` of one alert."""
    async with pool.connection() as conn:
        row = await (
            await conn.execute(f"SELECT {PICTURE_COLUMNS} FROM alerts a WHERE a.id = %s", (alert_id,))
        ).fetchone()
    return (row[0], row[1]) if row is not None else ([], [])


async def apply_action(
    pool: AsyncConnectionPool, alert_id: UUID, action: str, who: Principal, note: str
) -> StoredAlert | None:
    """Applies a desk action (one of ``ACTIONS``) by ``who``: the new status, its audit entry and its change for the
    streams, in one transaction; None when the alert's status (read under the row's lock) does not allow it."""
    allowed_from, to_status = ACTIONS[action]
    async with pool.connection() as conn, conn.transaction():
        current = await (await conn.execute(_LOCK_STATUS_SQL, (alert_id,))).fetchone()
        if current is None or current[0] not in allowed_from:
            return None
        updated = await (await conn.execute(_SET_STATUS_SQL, (to_status, who.name, alert_id))).fetchone()
        history = (alert_id, who.name, action, current[0], to_status, note, who.person_id)
        await conn.execute(ADD_HISTORY_SQL, history)
        await conn.execute(RECORD_CHANGES, ([alert_id], [str(to_status)]))
    return row_to_alert(updated) if updated is not None else None


async def assign(
    pool: AsyncConnectionPool, alert_id: UUID, assignee: tuple[str, UUID] | None, who: Principal, note: str
) -> StoredAlert | None:
    """Assigns an alert to a person (name, id), or to no one: the alert's fields, an ``assign`` entry in its audit
    trail and an ``assigned`` change for the streams, in one transaction; None when there is no such alert."""
    name, person_id = assignee or (None, None)
    async with pool.connection() as conn, conn.transaction():
        current = await (await conn.execute(_LOCK_STATUS_SQL, (alert_id,))).fetchone()
        if current is None:
            return None
        updated = await (await conn.execute(_ASSIGN_SQL, (name, person_id, alert_id))).fetchone()
        said = f"to {name}" if name else "to no one"
        history = (alert_id, who.name, "assign", current[0], current[0], f"{said}. {note}".strip(" ."), who.person_id)
        await conn.execute(ADD_HISTORY_SQL, history)
        await conn.execute(RECORD_CHANGES, ([alert_id], ["assigned"]))
    return row_to_alert(updated) if updated is not None else None
