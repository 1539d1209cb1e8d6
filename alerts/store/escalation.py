"""Escalation chains and each alert's place in its chain: the tables of migration 0012 and their queries.

A chain is what an alert of its kind (and route, from a minimum severity up) does while nobody acknowledges it:
ordered steps, each with its delay from the start of the unacknowledged time and whom to notify, run again
``repeat`` times, and an acknowledgement timeout after which an unresolved alert is unacknowledged again. The
database picks an alert's chain (``escalation_chain()``, migration 0012) and starts it when the alert is stored;
``alerts.notify.escalation`` runs the steps. Targets:

- ``person``: one person, by id;
- ``grid_team``: the members of the alert's grid (``grid_members``, migration 0011);
- ``desk``: the people on duty of a role (the alert's route unless named) whose scope is exactly the alert's
  community or sub-district, or the whole district (``level: district``, e.g. the fire brigade's duty officer);
- ``robot``: a chat-group robot (a webhook of format wecom, dingtalk or feishu), its message mentioning the
  mobiles of the people the same step notifies.

Example:
    >>> chain = ChainIn(kind="fire", steps=[{"delay_s": 1, "targets": [{"type": "grid_team"}]},
    ...                                     {"delay_s": 3, "targets": [{"type": "desk", "level": "community"}]}])
    >>> chain.period_s, chain.steps[1].targets[0].role
    (3.0, None)
    >>> ChainIn(kind="fire", steps=[{"delay_s": 5, "targets": [{"type": "grid_team"}]},
    ...                             {"delay_s": 2, "targets": [{"type": "grid_team"}]}])
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for ChainIn
      Value error, steps: each delay_s at least the one before (they count from the same start) ...
    ...
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from alerts.core.models import AlertStatus, EventKind, Role, Severity
from alerts.store.alert_queries import ADD_HISTORY_SQL
from alerts.store.database import RECORD_CHANGES

ACTOR = "escalation"
"""Who the audit trail says acted on an alert when its chain did."""


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonTarget(_Target):
    type: Literal["person"] = Field(default="person", description="One person.")
    person_id: UUID = Field(description="The person's id.")


class GridTeamTarget(_Target):
    type: Literal["grid_team"] = Field(default="grid_team", description="The members of the alert's grid.")


class DeskTarget(_Target):
    type: Literal["desk"] = Field(default="desk", description="The people on duty of a desk.")
    level: Literal["community", "sub_district", "district"] = Field(
        description="Whose desk: the alert's community's, its sub-district's, or the whole district's."
    )
    role: Role | None = Field(default=None, description="The desk's role; default the alert's route.")


class RobotTarget(_Target):
    type: Literal["robot"] = Field(default="robot", description="A chat-group robot.")
    webhook_id: UUID = Field(description="A registered chat-group robot (a webhook of format wecom, dingtalk, feishu).")


Target = Annotated[PersonTarget | GridTeamTarget | DeskTarget | RobotTarget, Field(discriminator="type")]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delay_s: float = Field(ge=0, le=7 * 86400, description="Seconds unacknowledged before this step.")
    targets: list[Target] = Field(min_length=1, max_length=20, description="Whom this step notifies.")


class ChainIn(BaseModel):
    """One escalation chain, as an admin gives it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", max_length=200, description="What the chain is called.")
    kind: EventKind = Field(description="The kind of alert it escalates.")
    route: Role | None = Field(default=None, description="Only alerts routed to this desk (default any).")
    min_severity: Severity = Field(default=Severity.INFO, description="Only alerts of this severity or above.")
    steps: list[Step] = Field(min_length=1, max_length=20, description="In order of their delays.")
    repeat: int = Field(default=0, ge=0, le=100, description="Runs of the whole chain after the first.")
    ack_timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="Acknowledged but unresolved this long: unacknowledged again."
    )
    stop_when_cleared: bool = Field(default=False, description="Stop once the condition clears by itself.")

    @model_validator(mode="after")
    def _ordered(self) -> ChainIn:
        delays = [step.delay_s for step in self.steps]
        if delays != sorted(delays):
            raise ValueError("steps: each delay_s at least the one before (they count from the same start)")
        if self.repeat and delays[-1] <= 0:
            raise ValueError("repeat: a chain that repeats needs a last delay_s above 0 (one round's length)")
        return self

    @property
    def period_s(self) -> float:
        """How long one round lasts: the last step's delay."""
        return self.steps[-1].delay_s

    def key(self) -> tuple[str, str | None, str]:
        return (self.kind, self.route, self.min_severity)


class Chain(ChainIn):
    id: UUID = Field(description="The chain's id.")


_CHAIN_FIELDS = ", ".join(Chain.model_fields)
_chains = TypeAdapter(list[ChainIn])


def _chain(row: tuple) -> Chain:
    return Chain.model_validate(dict(zip(Chain.model_fields, row, strict=True)))


async def list_chains(pool: AsyncConnectionPool) -> list[Chain]:
    async with pool.connection() as conn:
        sql = f"SELECT {_CHAIN_FIELDS} FROM escalation_chains ORDER BY kind, route NULLS FIRST, min_severity"
        rows = await (await conn.execute(sql)).fetchall()
    return [_chain(row) for row in rows]


async def replace_chains(pool: AsyncConnectionPool, chains: list[ChainIn]) -> list[Chain]:
    """Replaces every chain with ``chains`` in one transaction; ValueError saying why when one is refused (two
    for the same kind, route and severity; a person or robot that does not exist)."""
    keys = [chain.key() for chain in chains]
    if len(set(keys)) < len(keys):
        raise ValueError("two chains for the same kind, route and min_severity")
    targets = [t for chain in chains for step in chain.steps for t in step.targets]
    people = [t.person_id for t in targets if isinstance(t, PersonTarget)]
    robots = [t.webhook_id for t in targets if isinstance(t, RobotTarget)]
    async with pool.connection() as conn, conn.transaction():
        found = await (await conn.execute("SELECT id FROM people WHERE id = ANY(%s)", (people,))).fetchall()
        if missing := set(people) - {row[0] for row in found}:
            raise ValueError(f"no person {sorted(map(str, missing))[0]}")
        sql = "SELECT id FROM webhooks WHERE id = ANY(%s) AND active AND format <> 'json'"
        found = await (await conn.execute(sql, (robots,))).fetchall()
        if missing := set(robots) - {row[0] for row in found}:
            raise ValueError(f"no active chat-group robot {sorted(map(str, missing))[0]}")
        await conn.execute("DELETE FROM escalation_chains")
        # Every alert under escalation may follow another chain now, or none.
        await conn.execute("UPDATE alert_escalations SET look_at = now()")
        stored = []
        for chain in chains:
            values = chain.model_dump(mode="json")
            values["steps"] = Jsonb(values["steps"])
            columns = ", ".join(values)
            sql = (
                f"INSERT INTO escalation_chains ({columns}) VALUES ({', '.join(['%s'] * len(values))})"
                f" RETURNING {_CHAIN_FIELDS}"
            )
            row = await (await conn.execute(sql, list(values.values()))).fetchone()
            if row is not None:  # an INSERT ... RETURNING answers its row
                stored.append(_chain(row))
    return stored


class Escalating(BaseModel):
    """An alert under escalation, read under its locks: its chain's state and what the runner needs of it."""

    alert_id: UUID
    started_at: datetime
    step: int
    round: int
    due_at: datetime | None
    kind: EventKind
    route: Role
    severity: Severity
    status: AlertStatus
    status_at: datetime | None
    active: bool
    sub_district: str
    community: str
    grid: str
    now: datetime


# The rows whose look is due (migration 0020): the runner works out what each needs under its locks, and says when
# to look again.
_DUE_SQL = """
SELECT alert_id FROM alert_escalations WHERE look_at <= now() AND alert_id <> ALL(%s) ORDER BY look_at LIMIT %s"""

# The alert's row first, as a desk's action and ingest lock it (their change of it then takes the escalation's
# row, migration 0020's trigger), so an acknowledgement and a step never cross; then the escalation's row, which
# another runner holding has: skip it.
_ALERT_SQL = """
SELECT kind, route, severity, status, status_at, active, sub_district, community, grid, now() FROM alerts
WHERE id = %s FOR NO KEY UPDATE"""
_CLAIM_SQL = """
SELECT e.alert_id, e.started_at, e.step, e.round, e.due_at FROM alert_escalations e WHERE e.alert_id = %s
FOR UPDATE SKIP LOCKED"""
_CHAIN_SQL = f"SELECT {_CHAIN_FIELDS} FROM escalation_chain(%s, %s, %s)"


async def due(conn: psycopg.AsyncConnection, limit: int, held: list[UUID]) -> list[UUID]:
    """Alerts but ``held`` whose escalation has something to do now (a snapshot: each is checked again under its
    lock)."""
    return [row[0] for row in await (await conn.execute(_DUE_SQL, (held, limit))).fetchall()]


async def claim(conn: psycopg.AsyncConnection, alert_id: UUID) -> tuple[Escalating, Chain | None] | None:
    """Locks an alert's escalation and the alert, in the caller's transaction: its state and its chain now; None
    when another runner holds it or it is gone."""
    alert = await (await conn.execute(_ALERT_SQL, (alert_id,))).fetchone()
    if alert is None:
        return None
    state = await (await conn.execute(_CLAIM_SQL, (alert_id,))).fetchone()
    if state is None:
        return None
    fields = dict(zip(Escalating.model_fields, (*state, *alert), strict=True))
    escalating = Escalating.model_validate(fields)
    chain = await (await conn.execute(_CHAIN_SQL, (escalating.kind, escalating.route, escalating.severity))).fetchone()
    return escalating, _chain(chain) if chain is not None else None


async def schedule(
    conn: psycopg.AsyncConnection, alert_id: UUID, step: int, round_: int, due_at: datetime | None, started_at: datetime
) -> None:
    sql = """UPDATE alert_escalations SET step = %s, round = %s, due_at = %s, look_at = %s, started_at = %s
WHERE alert_id = %s"""
    await conn.execute(sql, (step, round_, due_at, due_at, started_at, alert_id))


async def look_again(conn: psycopg.AsyncConnection, alert_id: UUID, at: datetime | None) -> None:
    """When the runner next looks at an alert's escalation; None: only once the alert changes."""
    await conn.execute("UPDATE alert_escalations SET look_at = %s WHERE alert_id = %s", (at, alert_id))


async def record(
    conn: psycopg.AsyncConnection, alert: Escalating, action: str, to_status: AlertStatus, note: str, change: str
) -> None:
    """An escalation's entry in the alert's audit trail and its change for the streams (and webhooks)."""
    await conn.execute(ADD_HISTORY_SQL, (alert.alert_id, ACTOR, action, alert.status, to_status, note, None))
    await conn.execute(RECORD_CHANGES, ([alert.alert_id], [change]))


async def reopen(conn: psycopg.AsyncConnection, alert_id: UUID) -> None:
    """Back to new: an acknowledgement that timed out."""
    sql = "UPDATE alerts SET status = 'new', status_by = %s, status_at = now(), updated_at = now() WHERE id = %s"
    await conn.execute(sql, (ACTOR, alert_id))


async def finish(conn: psycopg.AsyncConnection, alert_id: UUID) -> None:
    await conn.execute("DELETE FROM alert_escalations WHERE alert_id = %s", (alert_id,))


class Person(BaseModel):
    name: str
    mobile: str | None


# Disabled people are never notified; a phone counts as a mobile once its spaces and dashes are gone.
_PERSON = (
    "p.name, CASE WHEN regexp_replace(p.phone, '[ -]', '', 'g') ~ '^\\+?[0-9]{5,20}$'"
    " THEN regexp_replace(p.phone, '[ -]', '', 'g') END FROM people p"
)
_DESK_LEVELS = {
    "community": "p.sub_district = %s AND p.community = %s AND p.grid IS NULL AND p.site IS NULL",
    "sub_district": "p.sub_district = %s AND p.community IS NULL",
    "district": "p.sub_district IS NULL",
}


async def people(conn: psycopg.AsyncConnection, target: _Target, alert: Escalating) -> list[Person]:
    """The people a person, grid team or desk target stands for, for this alert."""
    params: list[object]
    if isinstance(target, PersonTarget):
        sql, params = f"SELECT {_PERSON} WHERE p.id = %s AND p.disabled_at IS NULL", [target.person_id]
    elif isinstance(target, GridTeamTarget):
        sql = (
            f"SELECT {_PERSON} JOIN grid_members m ON m.person_id = p.id WHERE m.community = %s AND m.grid = %s"
            " AND p.disabled_at IS NULL ORDER BY m.leader DESC, p.name"
        )
        params = [alert.community, alert.grid]
    elif isinstance(target, DeskTarget):
        level = _DESK_LEVELS[target.level]
        place = [alert.sub_district, alert.community][: level.count("%s")]
        sql = f"SELECT {_PERSON} WHERE p.role = %s AND p.on_duty AND p.disabled_at IS NULL AND {level} ORDER BY p.name"
        params = [target.role or alert.route, *place]
    else:
        return []
    return [Person(name=name, mobile=mobile) for name, mobile in await (await conn.execute(sql, params)).fetchall()]


async def robot(conn: psycopg.AsyncConnection, webhook_id: UUID) -> str | None:
    """A robot target's format, or None when it is no longer an active robot."""
    sql = "SELECT format FROM webhooks WHERE id = %s AND active AND format <> 'json'"
    row = await (await conn.execute(sql, (webhook_id,))).fetchone()
    return row[0] if row is not None else None


async def queue_robot(
    conn: psycopg.AsyncConnection, webhook_id: UUID, alert_id: UUID, change: str, mobiles: list[str]
) -> None:
    """Queues the change just recorded in this transaction (the session's last ``alert_changes`` seq) for a robot,
    mentioning ``mobiles``: a robot whose kinds and place already queued it gets the mentions added."""
    await conn.execute(
        "INSERT INTO webhook_deliveries (webhook_id, alert_id, seq, change, mention_mobiles)"
        " VALUES (%s, %s, currval(pg_get_serial_sequence('alert_changes', 'seq')), %s, %s)"
        " ON CONFLICT (webhook_id, seq) DO UPDATE SET mention_mobiles = EXCLUDED.mention_mobiles",
        (webhook_id, alert_id, change, mobiles),
    )
