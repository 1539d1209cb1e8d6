"""Enforcement cases: every enforcement alert is a case a department works until it is closed.

A case is opened in the transaction that stores its alert, by a trigger on ``alerts`` (migration 0015): the
write path is unchanged, other kinds cost nothing, and a case that cannot be opened is a warning in
PostgreSQL's log, never a lost alert. A desk then moves it through ``TRANSITIONS``::

    open -> assigned -> rectified -> rechecked -> closed
       reopened <------------------------/  \\------'     (reopen from rechecked or closed; assign again)

Each step is one transaction: the case's new status, its step (with photos) in ``case_steps``, an entry in its
alert's audit trail (``alert_history``, action ``case-<action>``; the alert's own status is unchanged but
for ``close``, which resolves an alert still new or acknowledged), and a ``case_<status>`` change on the
alerts' stream. Who may see or work a case is who may see its alert (``alerts.store.queries.where``).

A recheck of a camera-detected case attaches the newest picture the centre holds from that camera (its events'
snapshots), copied into the case with the event it came from and its time, and asks the node for the camera's
picture now (``alerts.store.snapshots``, ``SNAPSHOT_EXPIRES_S``): the fresh picture joins the step when the node
answers, and the held one stays as the fallback when it does not.

Example:
    >>> TRANSITIONS["recheck"]
    ((<CaseStatus.RECTIFIED: 'rectified'>,), <CaseStatus.RECHECKED: 'rechecked'>)
    >>> allowed("close", CaseStatus.ASSIGNED)
    'cannot close a case that is assigned (only one that is rechecked)'
    >>> allowed("assign", CaseStatus.REOPENED) is None
    True
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from alerts.auth import Principal
from alerts.core.models import AlertStatus, Place
from alerts.store import snapshots
from alerts.store.database import RECORD_CHANGES
from alerts.store.queries import AlertFilter, PlaceFilter, check_order, place_clause, scope_clause, where
from alerts.store.rows import rows_as

log = logging.getLogger(__name__)

SNAPSHOT_EXPIRES_S = 600.0
"""How long a recheck waits for the camera's fresh picture (a node offline longer keeps its step's held one)."""


class CaseStatus(StrEnum):
    OPEN = "open"
    ASSIGNED = "assigned"
    RECTIFIED = "rectified"
    RECHECKED = "rechecked"
    CLOSED = "closed"
    REOPENED = "reopened"


class Department(StrEnum):
    CITY_MANAGEMENT = "city_management"
    TRAFFIC_POLICE = "traffic_police"
    MARKET_REGULATION = "market_regulation"


S = CaseStatus
TRANSITIONS: dict[str, tuple[tuple[CaseStatus, ...], CaseStatus]] = {
    "assign": ((S.OPEN, S.ASSIGNED, S.REOPENED), S.ASSIGNED),
    "rectify": ((S.ASSIGNED,), S.RECTIFIED),
    "recheck": ((S.RECTIFIED,), S.RECHECKED),
    "close": ((S.RECHECKED,), S.CLOSED),
    "reopen": ((S.RECHECKED, S.CLOSED), S.REOPENED),
}
"""Each desk step: the statuses a case may be in for it, and the status it leaves the case in."""


def allowed(action: str, status: CaseStatus) -> str | None:
    """Why ``action`` may not be taken on a case in ``status``, or None when it may."""
    sources, _ = TRANSITIONS[action]
    if status in sources:
        return None
    return f"cannot {action} a case that is {status} (only one that is {' or '.join(sources)})"


class Photo(BaseModel):
    id: UUID = Field(description="The photo's id: GET /api/v1/cases/{case}/photos/{id} gives the image.")
    source: str = Field(description="upload (the desk's) or camera (the camera's picture at a recheck).")
    event_id: UUID | None = Field(description="The camera event the picture came from.")
    taken_at: datetime = Field(description="When the picture was taken (a camera's: its event's time).")
    content_type: str = Field(description="image/jpeg or image/png.")


class CaseStep(BaseModel):
    at: datetime = Field(description="When.")
    actor: str = Field(description="Who: the person's name, or the key holder's.")
    person_id: UUID | None = Field(description="The person's id, when a person acted.")
    action: str = Field(description="open, assign, rectify, recheck, close or reopen.")
    from_status: CaseStatus = Field(description="The case's status before.")
    to_status: CaseStatus = Field(description="And after.")
    note: str = Field(description="What the desk wrote.")
    photos: list[Photo] = Field(description="Pictures of the step.")


class Case(BaseModel):
    id: UUID = Field(description="The case's id.")
    alert_id: UUID = Field(description="The enforcement alert it works.")
    type: str = Field(description="What: illegal_parking, zone_occupied, road_stall, illegal_building ...")
    place: Place = Field(description="Where (the alert's place).")
    department: Department = Field(description="The department working it.")
    assignee: str | None = Field(description="The person working it.")
    assignee_id: UUID | None = Field(description="Their id.")
    deadline: datetime | None = Field(description="When it must be rectified by.")
    status: CaseStatus = Field(description="Where it stands.")
    created_at: datetime = Field(description="When it was opened.")
    updated_at: datetime = Field(description="Its last step.")
    closed_at: datetime | None = Field(description="When it was last closed.")
    camera: bool = Field(description="Detected by a camera: a recheck attaches the camera's picture.")


class CaseQuery(PlaceFilter):
    status: list[CaseStatus] = Field(default_factory=list, description="Only these statuses (repeatable).")
    department: list[Department] = Field(default_factory=list, description="Only these departments (repeatable).")
    type: list[str] = Field(default_factory=list, description="Only these types (repeatable).")
    limit: int = Field(default=100, ge=1, le=500, description="Cases, newest first.")


class StepIn(BaseModel):
    """What a desk gives with a step besides photos."""

    note: str = Field(default="", max_length=2000, description="What the desk did or saw.")
    department: Department | None = Field(default=None, description="assign: the department (default: as is).")
    assignee: tuple[str, UUID] | None = Field(default=None, description="assign: the person (name, id).")
    deadline: AwareDatetime | None = Field(default=None, description="assign: rectify by then.")


_CASE_COLUMNS = (
    "c.id, c.alert_id, c.type, json_build_object('sub_district', c.sub_district, 'community', c.community,"
    " 'grid', c.grid, 'site', c.site, 'device', c.device), c.department, c.assignee, c.assignee_id, c.deadline,"
    " c.status, c.created_at, c.updated_at, c.closed_at, a.device IS NOT NULL AND a.source NOT LIKE 'reporter:%%'"
)
_STEPS_SQL = """
SELECT s.at, s.actor, s.person_id, s.action, s.from_status, s.to_status, s.note,
       coalesce(json_agg(json_build_object('id', p.id, 'source', p.source, 'event_id', p.event_id,
                'taken_at', p.taken_at, 'content_type', p.content_type) ORDER BY p.taken_at)
                FILTER (WHERE p.id IS NOT NULL), '[]')
FROM case_steps s LEFT JOIN case_photos p ON p.step_id = s.id
WHERE s.case_id = %s GROUP BY s.id ORDER BY s.at, s.id"""
_LOCK_SQL = "SELECT status FROM cases WHERE id = %s FOR NO KEY UPDATE"
_STEP_SQL = """
UPDATE cases SET status = %(to)s, updated_at = now(), department = coalesce(%(department)s, department),
    assignee = CASE WHEN %(assign)s THEN %(assignee)s ELSE assignee END,
    assignee_id = CASE WHEN %(assign)s THEN %(assignee_id)s ELSE assignee_id END,
    deadline = CASE WHEN %(assign)s THEN %(deadline)s ELSE deadline END,
    closed_at = CASE WHEN %(to)s = 'closed' THEN now() ELSE closed_at END
WHERE id = %(id)s"""
_ADD_STEP_SQL = """
INSERT INTO case_steps (case_id, actor, person_id, action, from_status, to_status, note)
VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id"""
_ADD_PHOTO_SQL = """
INSERT INTO case_photos (case_id, step_id, source, event_id, taken_at, content_type, data)
VALUES (%s, %s, %s, %s, %s, %s, %s)"""
# The newest picture of a camera, by the events' (site, device, ts) index.
_CAMERA_PICTURE_SQL = """
SELECT id, ts, snapshot FROM events WHERE site = %s AND device = %s AND snapshot IS NOT NULL
ORDER BY ts DESC LIMIT 1"""
# Closing a case resolves its alert when no desk has.
_RESOLVE_SQL = """
UPDATE alerts SET status = 'resolved', status_by = %s, status_at = now(), updated_at = now()
WHERE id = %s AND status IN ('new', 'acknowledged') RETURNING status"""
_ALERT_STATUS_SQL = "SELECT status FROM alerts WHERE id = %s"
_HISTORY_SQL = """
INSERT INTO alert_history (alert_id, actor, action, from_status, to_status, note, person_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)"""
_PHOTO_SQL = "SELECT p.content_type, p.data FROM case_photos p WHERE p.id = %s AND p.case_id = %s"


def _case_where(who: Principal, extra: list[str], params: list[Any]) -> tuple[str, list[Any]]:
    """The WHERE (cases ``c`` joined to their alerts ``a``) for the cases a caller may see: those of its alerts."""
    clause, scoped = where(AlertFilter(), who)
    return " AND ".join([clause, *extra]), [*scoped, *params]


async def list_cases(pool: AsyncConnectionPool, who: Principal, q: CaseQuery) -> list[Case]:
    """The newest ``q.limit`` cases the caller may see that match ``q``."""
    extra, params = place_clause(q, "c")
    for column in ("status", "department", "type"):
        if values := getattr(q, column):
            extra.append(f"c.{column} = ANY(%s)")
            params.append([str(v) for v in values])
    clause, params = _case_where(who, extra, params)
    sql = (
        f"SELECT {_CASE_COLUMNS} FROM cases c JOIN alerts a ON a.id = c.alert_id WHERE {clause}"
        " ORDER BY c.created_at DESC, c.id DESC LIMIT %s"
    )
    async with pool.connection() as conn:
        return rows_as(Case, await (await conn.execute(sql, [*params, q.limit])).fetchall())


async def visible_cases(conn: AsyncConnection, who: Principal, ids: list[UUID]) -> list[Case]:
    """The cases among ``ids`` the caller may see."""
    clause, params = _case_where(who, ["c.id = ANY(%s)"], [ids])
    sql = f"SELECT {_CASE_COLUMNS} FROM cases c JOIN alerts a ON a.id = c.alert_id WHERE {clause}"
    return rows_as(Case, await (await conn.execute(sql, params)).fetchall())


async def find_case(pool: AsyncConnectionPool, who: Principal, case_id: UUID) -> Case | None:
    """The case if the caller may see it."""
    async with pool.connection() as conn:
        found = await visible_cases(conn, who, [case_id])
    return found[0] if found else None


async def case_steps(pool: AsyncConnectionPool, case_id: UUID) -> list[CaseStep]:
    """The case's steps, oldest first, each with its photos (not their bytes)."""
    async with pool.connection() as conn:
        return rows_as(CaseStep, await (await conn.execute(_STEPS_SQL, (case_id,))).fetchall())


async def case_photo(pool: AsyncConnectionPool, case_id: UUID, photo_id: UUID) -> tuple[str, bytes] | None:
    """(content type, bytes) of a photo of a case (the caller checked it may see the case)."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_PHOTO_SQL, (photo_id, case_id))).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


async def _camera_picture(conn: AsyncConnection, place: Place) -> tuple[UUID, datetime, bytes] | None:
    row = await (await conn.execute(_CAMERA_PICTURE_SQL, (place.site, place.device))).fetchone()
    return None if row is None else (row[0], row[1], bytes(row[2]))


async def take_step(
    pool: AsyncConnectionPool,
    case: Case,
    action: str,
    who: Principal,
    step: StepIn,
    photos: list[tuple[str, bytes]],
) -> str | None:
    """Takes a desk step on a case (see the module's docstring), in one transaction; why not when the case's
    status, read under its row's lock, does not allow it (another desk moved it meanwhile)."""
    _, to_status = TRANSITIONS[action]
    async with pool.connection() as conn, conn.transaction():
        current = await (await conn.execute(_LOCK_SQL, (case.id,))).fetchone()
        refused = "no such case" if current is None else allowed(action, CaseStatus(current[0]))
        if current is None or refused is not None:
            return refused
        assignee_name, assignee_id = step.assignee or (None, None)
        await conn.execute(
            _STEP_SQL,
            {"to": to_status, "department": step.department, "assign": action == "assign",
             "assignee": assignee_name, "assignee_id": assignee_id, "deadline": step.deadline, "id": case.id},
        )  # fmt: skip
        note = _step_note(action, step)
        added = await conn.execute(
            _ADD_STEP_SQL, (case.id, who.name, who.person_id, action, current[0], to_status, note)
        )
        step_id = (await added.fetchone() or (0,))[0]
        now = datetime.now(UTC)
        for content_type, data in photos:
            await conn.execute(_ADD_PHOTO_SQL, (case.id, step_id, "upload", None, now, content_type, data))
        if action == "recheck" and case.camera:
            note += await _attach_camera_picture(conn, case, step_id)
            await snapshots.request(conn, case.id, step_id, case.place, SNAPSHOT_EXPIRES_S)
            note += " (a fresh picture is requested)"
        await _audit(conn, case, action, who, f"case {current[0]} -> {to_status}. {note}".strip(" ."))
    log.info("%s: case %s %s -> %s", who.name, case.id, current[0], to_status)
    return None


def _step_note(action: str, step: StepIn) -> str:
    """The step's note, with what an assignment set."""
    if action != "assign":
        return step.note
    said = [f"to {step.assignee[0]}" if step.assignee else "to no one"]
    said += [f"department {step.department}"] if step.department else []
    said += [f"deadline {step.deadline.isoformat()}"] if step.deadline else []
    return ". ".join([", ".join(said), step.note]).strip(" .")


async def _attach_camera_picture(conn: AsyncConnection, case: Case, step_id: int) -> str:
    """Copies the camera's newest picture into the recheck step; what the audit trail should add about it."""
    picture = await _camera_picture(conn, case.place)
    if picture is None:
        return f" (no picture from camera {case.place.device} is held)"
    event_id, taken, data = picture
    content_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    await conn.execute(_ADD_PHOTO_SQL, (case.id, step_id, "camera", event_id, taken, content_type, data))
    return f" (camera {case.place.device} picture of {taken.isoformat()} attached)"


async def _audit(conn: AsyncConnection, case: Case, action: str, who: Principal, note: str) -> None:
    """The step in its alert's audit trail and on the stream; closing resolves an alert no desk has."""
    status = (await (await conn.execute(_ALERT_STATUS_SQL, (case.alert_id,))).fetchone() or ("new",))[0]
    after = status
    if action == "close":
        resolved = await (await conn.execute(_RESOLVE_SQL, (who.name, case.alert_id))).fetchone()
        after = resolved[0] if resolved else status
    history = (case.alert_id, who.name, f"case-{action}", status, after, note, who.person_id)
    await conn.execute(_HISTORY_SQL, history)
    _, to_status = TRANSITIONS[action]
    changes = [f"case_{to_status}", *([str(AlertStatus.RESOLVED)] if after != status else [])]
    await conn.execute(RECORD_CHANGES, ([case.alert_id] * len(changes), changes))


class JointOperationIn(BaseModel):
    day: date = Field(description="The day of the operation.")
    departments: list[Department] = Field(min_length=1, description="The departments that took part.")
    team: list[str] = Field(default_factory=list, max_length=100, description="Who took part (names).")
    case_ids: list[UUID] = Field(default_factory=list, max_length=1000, description="The cases it handled.")
    cases_handled: int | None = Field(default=None, ge=0, description="How many cases (default: the ids given).")
    note: str = Field(default="", max_length=4000, description="What was done.")
    community: str | None = Field(default=None, description="Where (default: the caller's community).")


class JointOperation(BaseModel):
    id: UUID = Field(description="The operation's id.")
    day: date = Field(description="Its day.")
    departments: list[Department] = Field(description="Departments that took part.")
    team: list[str] = Field(description="Who took part.")
    case_ids: list[UUID] = Field(description="Cases handled.")
    cases_handled: int = Field(description="How many cases it handled.")
    note: str = Field(description="What was done.")
    sub_district: str | None = Field(description="Where: sub-district.")
    community: str | None = Field(description="Where: community.")
    actor: str = Field(description="Who recorded it.")
    created_at: datetime = Field(description="When it was recorded.")


_JOINT_COLUMNS = "id, day, departments, team, case_ids, cases_handled, note, sub_district, community, actor, created_at"


async def add_joint_operation(pool: AsyncConnectionPool, who: Principal, op: JointOperationIn) -> JointOperation:
    """Records a joint operation, in the caller's sub-district and community (the caller checked the cases)."""
    sql = (
        "INSERT INTO joint_operations (day, departments, team, case_ids, cases_handled, note, sub_district,"
        f" community, actor, person_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_JOINT_COLUMNS}"
    )
    handled = op.cases_handled if op.cases_handled is not None else len(set(op.case_ids))
    community = who.community or op.community
    params = [op.day, [str(d) for d in op.departments], op.team, list(dict.fromkeys(op.case_ids)), handled,
              op.note, who.sub_district, community, who.name, who.person_id]  # fmt: skip
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    return rows_as(JointOperation, [row] if row else [])[0]


class JointQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: date | None = Field(default=None, description="From this day.")
    until: date | None = Field(default=None, description="Before this day.")


async def joint_operations(pool: AsyncConnectionPool, who: Principal, q: JointQuery) -> list[JointOperation]:
    """The joint operations within the caller's sub-district and community, newest first (500 at most)."""
    clauses, params = scope_clause(who, "j", ("sub_district", "community"))
    for op, value in ((">=", q.since), ("<", q.until)):
        if value is not None:
            clauses.append(f"j.day {op} %s")
            params.append(value)
    sql = (
        f"SELECT {_JOINT_COLUMNS} FROM joint_operations j WHERE {' AND '.join(clauses) or 'TRUE'}"
        " ORDER BY day DESC, created_at DESC LIMIT 500"
    )
    async with pool.connection() as conn:
        return rows_as(JointOperation, await (await conn.execute(sql, params)).fetchall())


class WeeklyQuery(PlaceFilter):
    since: AwareDatetime | None = Field(default=None, description="From this time (default: 8 weeks before until).")
    until: AwareDatetime | None = Field(default=None, description="Before this time (default: now).")
    timezone: str = Field(default="Asia/Shanghai", max_length=64, description="Weeks start on Monday, here.")

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def bounds(self) -> tuple[datetime, datetime]:
        until = self.until or datetime.now(UTC)
        since = self.since or until - timedelta(weeks=8)
        check_order(since, until)
        return since, until


class WeeklyCount(BaseModel):
    week: date = Field(description="The week's Monday.")
    community: str = Field(description="Community.")
    department: Department = Field(description="Department.")
    type: str = Field(description="Kind of case (the alert's type).")
    opened: int = Field(description="Cases opened in the week.")
    closed: int = Field(description="Cases closed in the week.")


_WEEKLY_SQL = """
SELECT (date_trunc('week', t AT TIME ZONE %s))::date AS week, community, department, type,
       sum(opened)::int, sum(closed)::int
FROM (SELECT c.created_at AS t, c.community, c.department, c.type, 1 AS opened, 0 AS closed
      FROM cases c JOIN alerts a ON a.id = c.alert_id WHERE {clause}
      UNION ALL
      SELECT c.closed_at, c.community, c.department, c.type, 0, 1
      FROM cases c JOIN alerts a ON a.id = c.alert_id WHERE {clause} AND c.closed_at IS NOT NULL) x
WHERE t >= %s AND t < %s
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""


async def weekly_counts(pool: AsyncConnectionPool, who: Principal, q: WeeklyQuery) -> list[WeeklyCount]:
    """Cases opened and closed per week, community, department and type, of the cases the caller may see."""
    extra, params = place_clause(q, "c")
    clause, params = _case_where(who, extra, params)
    since, until = q.bounds()
    async with pool.connection() as conn:
        sql = _WEEKLY_SQL.format(clause=clause)
        rows = await (await conn.execute(sql, [q.timezone, *params, *params, since, until])).fetchall()
    return rows_as(WeeklyCount, rows)
