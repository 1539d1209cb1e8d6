"""Registered webhooks and their delivery logs, and the query functions that register, list and stop them.

A webhook is listed, stopped and its log read only where the caller's place scope reaches. Every value is a
bound parameter. The routes in ``alerts.api.routes_webhooks`` check the caller and the target; the deliveries
themselves are ``alerts.notify.webhooks``, and the chat-group robots' messages ``alerts.notify.robots``, whose
queries (claims per robot, the limiter's accounting) are here too.

A webhook's ``format`` is ``json`` (the generic body) or a chat-group robot: ``wecom`` (企业微信),
``dingtalk`` (钉钉) or ``feishu`` (飞书), each with its message kinds, mentions and a limit of ``per_minute``
messages in any ``window_s`` seconds (20 in 60 by default, as the robots allow).

Example:
    >>> WebhookIn(url="https://brigade.example/hook", role="fire").all_kinds()
    [<EventKind.FIRE: 'fire'>]
    >>> WebhookIn(url="https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1", role="fire", format="wecom").message
    'markdown'
    >>> WebhookIn(url="https://oapi.dingtalk.com/robot/send", role="fire", format="dingtalk")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for WebhookIn
      Value error, a DingTalk robot's URL carries its access_token (.../robot/send?access_token=...) ...
    ...
    >>> WebhookIn(url="ftp://brigade.example/")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for WebhookIn
    url
      Value error, must be an http:// or https:// URL [type=value_error, ...
    ...
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit
from uuid import UUID, uuid4

import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from alerts.auth import ROLE_KINDS, Principal
from alerts.core.models import EventKind, Role
from alerts.store.queries import scoped_where
from alerts.store.rows import ALERT_COLUMNS, StoredAlert, row_to_alert, rows_as

Format = Literal["json", "wecom", "dingtalk", "feishu"]
MESSAGES: dict[str, tuple[str, ...]] = {
    "json": ("",),
    "wecom": ("markdown", "text", "news"),
    "dingtalk": ("markdown", "actionCard"),
    "feishu": ("interactive", "post", "text"),
}
"""The message kinds each format sends; the first is the default."""
LINKED = frozenset({"news", "actionCard"})
"""Message kinds that are a link to the alert, which needs PATROLNET_PUBLIC_URL."""
ROBOT_PER_MINUTE = 20
ROBOT_WINDOW_S = 60.0

UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
Mobile = Annotated[str, StringConstraints(pattern=r"^\+?[0-9]{5,20}$")]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Where to POST (http or https); a robot's URL with its key.")
    role: Role | None = Field(default=None, description="Send the kinds this desk reads (or give kinds).")
    kinds: list[EventKind] = Field(default_factory=list, description="Send these kinds.")
    secret: str = Field(
        default="",
        max_length=200,
        description="json: HMAC-SHA256 key for X-Patrolnet-Signature; dingtalk, feishu: the robot's signing secret.",
    )
    sub_district: str | None = Field(default=None, description="Only alerts of this sub-district.")
    community: str | None = Field(default=None, description="Only alerts of this community.")
    grid: str | None = Field(default=None, description="Only alerts of this grid cell.")
    site: str | None = Field(default=None, description="Only alerts of this site.")
    format: Format = Field(
        default="json", description="json (the generic body) or a chat-group robot: wecom, dingtalk or feishu."
    )
    message: str = Field(
        default="",
        max_length=20,
        description="A robot's message kind: wecom markdown (default), text or news; dingtalk markdown (default)"
        " or actionCard; feishu interactive (default), post or text. news and actionCard need PATROLNET_PUBLIC_URL.",
    )
    mention_userids: list[UserId] = Field(
        default_factory=list, max_length=20, description="A robot's messages mention these user ids."
    )
    mention_mobiles: list[Mobile] = Field(
        default_factory=list,
        max_length=20,
        description="A robot's messages mention these mobile numbers (dingtalk; wecom text messages).",
    )
    per_minute: int = Field(
        default=ROBOT_PER_MINUTE, ge=1, le=ROBOT_PER_MINUTE, description="A robot takes at most this many messages"
        " in any window_s seconds; what would exceed it is folded into one summary message."
    )  # fmt: skip
    window_s: float = Field(default=ROBOT_WINDOW_S, ge=1, le=3600, description="The robot's limit window, seconds.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _some_kinds(self) -> WebhookIn:
        if self.kinds:
            return self
        if self.role is None:
            raise ValueError("give role or kinds")
        if not ROLE_KINDS[self.role]:
            raise ValueError(f"role {self.role} reads no alerts")
        return self

    @model_validator(mode="after")
    def _robot(self) -> WebhookIn:
        robot_fields = {"message", "mention_userids", "mention_mobiles", "per_minute", "window_s"}
        if self.format == "json":
            if given := sorted(robot_fields & self.model_fields_set):
                raise ValueError(f"{', '.join(given)}: for robots only (format wecom, dingtalk or feishu)")
            return self
        self.message = self.message or MESSAGES[self.format][0]
        if self.message not in MESSAGES[self.format]:
            raise ValueError(f"message: {self.format} robots send {', '.join(MESSAGES[self.format])}")
        if why := _robot_refusal(self):
            raise ValueError(why)
        return self

    def all_kinds(self) -> list[EventKind]:
        return sorted(set(self.kinds) | set(ROLE_KINDS[self.role] if self.role else ()))


def _robot_refusal(hook: WebhookIn) -> str | None:
    """Why a robot's settings cannot work, or None."""
    parts = urlsplit(hook.url)
    query = parse_qs(parts.query)
    if hook.format == "wecom":
        if not query.get("key"):
            return "a WeCom robot's URL carries its key (.../cgi-bin/webhook/send?key=...)"
        if hook.secret:
            return "WeCom robots are not signed: the key in the URL is their secret"
        if hook.mention_mobiles and hook.message != "text":
            return "WeCom mentions mobiles in text messages only (message: text)"
    elif hook.format == "dingtalk":
        if not query.get("access_token"):
            return "a DingTalk robot's URL carries its access_token (.../robot/send?access_token=...)"
    elif not parts.path.partition("/hook/")[2].strip("/"):
        return "a Feishu robot's URL ends with its hook token (.../open-apis/bot/v2/hook/<token>)"
    elif hook.mention_mobiles:
        return "Feishu robots mention by user id (open_id) only"
    return None


class Webhook(BaseModel):
    id: UUID = Field(description="The webhook's id.")
    url: str = Field(description="Where it POSTs.")
    kinds: list[EventKind] = Field(description="The kinds it sends.")
    sub_district: str | None = Field(description="Scope: sub-district.")
    community: str | None = Field(description="Scope: community.")
    grid: str | None = Field(description="Scope: grid cell.")
    site: str | None = Field(description="Scope: site.")
    signed: bool = Field(description="Whether deliveries carry a signature.")
    created_by: str = Field(description="The admin that registered it.")
    format: Format = Field(description="json, wecom, dingtalk or feishu.")
    message: str = Field(description="A robot's message kind ('' for json).")
    mention_userids: list[str] = Field(description="User ids a robot's messages mention.")
    mention_mobiles: list[str] = Field(description="Mobile numbers a robot's messages mention.")
    per_minute: int = Field(description="A robot's limit: messages in any window_s seconds.")
    window_s: float = Field(description="A robot's limit window, seconds.")


class Delivery(BaseModel):
    id: int = Field(description="Delivery id (X-Patrolnet-Delivery).")
    alert_id: UUID = Field(description="The alert.")
    seq: int = Field(description="The alert change's sequence number.")
    change: str = Field(description="raised, updated, cleared, acknowledged, ...")
    state: str = Field(description="pending, delivered or failed.")
    attempts: int = Field(description="POSTs tried.")
    last_status: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None = Field(description="Why the last try failed (a robot's error code and message).")
    created_at: datetime = Field(description="When it was queued.")
    delivered_at: datetime | None = Field(description="When the receiver accepted it.")
    folded: bool = Field(
        description="Held back by a robot's limit: it goes (or went) within a summary message, not one of its own."
    )


_COLUMNS = (  # Webhook's fields
    "id, url, kinds, sub_district, community, grid, site, secret <> '', created_by, format, message,"
    " mention_userids, mention_mobiles, per_minute, window_s"
)
_DELIVERY_COLUMNS = ", ".join(f"d.{name}" for name in Delivery.model_fields)


async def list_webhooks(pool: AsyncConnectionPool, who: Principal) -> list[Webhook]:
    """The active webhooks within the caller's scope, oldest first."""
    where, params = scoped_where(who, None, "w")
    sql = f"SELECT {_COLUMNS} FROM webhooks w WHERE active AND {where} ORDER BY created_at"
    async with pool.connection() as conn:
        return rows_as(Webhook, await (await conn.execute(sql, params)).fetchall())


async def add_webhook(pool: AsyncConnectionPool, body: WebhookIn, created_by: str) -> Webhook:
    """Stores the webhook (its target already checked) under a new id."""
    hook = Webhook(
        id=uuid4(),
        signed=bool(body.secret),
        created_by=created_by,
        **body.model_dump(exclude={"role", "kinds", "secret"}),
        kinds=body.all_kinds(),
    )
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO webhooks (id, url, secret, kinds, sub_district, community, grid, site, created_by, format,"
            " message, mention_userids, mention_mobiles, per_minute, window_s)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (hook.id, hook.url, body.secret, hook.kinds, hook.sub_district, hook.community, hook.grid, hook.site,
             created_by, hook.format, hook.message, hook.mention_userids, hook.mention_mobiles, hook.per_minute,
             hook.window_s),
        )  # fmt: skip
    return hook


async def stop_webhook(pool: AsyncConnectionPool, who: Principal, webhook_id: UUID) -> bool:
    """Stops the webhook if it is active within the caller's scope (its log stays); whether it did."""
    where, params = scoped_where(who, None, "w")
    async with pool.connection() as conn:
        sql = f"UPDATE webhooks w SET active = false WHERE w.id = %s AND active AND {where} RETURNING id"
        return await (await conn.execute(sql, [webhook_id, *params])).fetchone() is not None


async def list_deliveries(pool: AsyncConnectionPool, who: Principal, webhook_id: UUID, limit: int) -> list[Delivery]:
    """The newest ``limit`` deliveries of a webhook within the caller's scope, newest first."""
    where, params = scoped_where(who, None, "w")
    sql = (
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
        f" WHERE w.id = %s AND {where} ORDER BY d.id DESC LIMIT %s"
    )
    async with pool.connection() as conn:
        return rows_as(Delivery, await (await conn.execute(sql, [webhook_id, *params, limit])).fetchall())


# What the dispatchers run, on their own connections (autocommit unless a transaction is opened).


def alerts_by_id(conn: psycopg.Connection, alert_ids: list[UUID]) -> dict[UUID, StoredAlert]:
    """The stored alerts of these ids (one dropped by retention is missing)."""
    rows = conn.execute(f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ANY(%s)", (alert_ids,))
    return {row[0]: row_to_alert(row) for row in rows}


def newest_snapshots(conn: psycopg.Connection, alert_ids: list[UUID]) -> dict[UUID, bytes]:
    """The newest picture among each alert's events, for the alerts that have one."""
    rows = conn.execute(
        "SELECT DISTINCT ON (l.alert_id) l.alert_id, e.snapshot FROM alert_events l JOIN events e ON e.id = l.event_id"
        " WHERE l.alert_id = ANY(%s) AND e.snapshot IS NOT NULL ORDER BY l.alert_id, e.ts DESC, e.id DESC",
        (alert_ids,),
    )
    return {alert_id: bytes(snapshot) for alert_id, snapshot in rows}


class Robot(NamedTuple):
    """A chat-group robot as the dispatchers read it."""

    id: UUID
    url: str
    secret: str
    format: str
    message: str
    mention_userids: list[str]
    mention_mobiles: list[str]


class RobotDelivery(NamedTuple):
    """A claimed delivery to a robot."""

    id: int
    seq: int
    change: str
    attempts: int
    alert_id: UUID
    parts_sent: int
    held: bool
    mention_mobiles: list[str]
    """Mobiles this delivery mentions besides the robot's own: the people an escalation step notifies."""


_DUE_ROBOTS_SQL = """
SELECT w.id, w.url, w.secret, w.format, w.message, w.mention_userids, w.mention_mobiles FROM webhooks w
WHERE w.format <> 'json' AND w.id IN (SELECT webhook_id FROM webhook_deliveries WHERE state = 'pending'
                                      AND next_at <= now())"""

# A robot's due deliveries are claimed together, so what its limit cannot take now is folded into one message.
_CLAIM_ROBOT_SQL = """
UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_at = now() + %(lease)s
WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = %(robot)s AND state = 'pending'
               AND next_at <= now() ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.seq, d.change, d.attempts, d.alert_id, d.parts_sent, d.folded, d.mention_mobiles"""


def due_robots(conn: psycopg.Connection) -> list[Robot]:
    """The robots with deliveries due."""
    return [Robot(*row) for row in conn.execute(_DUE_ROBOTS_SQL)]


def claim_robot_deliveries(
    conn: psycopg.Connection, robot_id: UUID, lease: timedelta, limit: int
) -> list[RobotDelivery]:
    """Claims (counts a try and leases) a robot's due deliveries that no other dispatcher holds, oldest first."""
    rows = conn.execute(_CLAIM_ROBOT_SQL, {"lease": lease, "robot": robot_id, "limit": limit}).fetchall()
    return sorted(RobotDelivery(*row) for row in rows)


def hold(conn: psycopg.Connection, delivery_ids: list[int], until: datetime) -> None:
    """Puts claimed deliveries back, untried, until ``until`` (the robot's limit had no room for them): they
    will go folded into a summary."""
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = attempts - 1, next_at = %s, folded = true WHERE id = ANY(%s)",
        (until, delivery_ids),
    )


def record_part(conn: psycopg.Connection, delivery_id: int, parts_sent: int) -> None:
    """Notes how many of a delivery's messages the robot took, so that a retry sends only the rest."""
    conn.execute("UPDATE webhook_deliveries SET parts_sent = %s WHERE id = %s", (parts_sent, delivery_id))


_LOCK_ROBOT_SQL = "SELECT per_minute, window_s FROM webhooks WHERE id = %s FOR NO KEY UPDATE"
_FORGET_SQL = "DELETE FROM robot_sends WHERE webhook_id = %s AND at <= clock_timestamp() - make_interval(secs => %s)"
# When a slot may free, at the earliest: a message in flight may be answered now.
_IN_WINDOW_SQL = (
    "SELECT count(*), coalesce(min(least(at, clock_timestamp())), clock_timestamp()) + make_interval(secs => %s)"
    " FROM robot_sends WHERE webhook_id = %s"
)
_RESERVE_SQL = (
    "INSERT INTO robot_sends (webhook_id, at) SELECT %s, clock_timestamp() + make_interval(secs => %s)"
    " FROM generate_series(1, %s) RETURNING id"
)


def robot_room(conn: psycopg.Connection, robot_id: UUID) -> tuple[int, datetime]:
    """(messages the robot may take now, the earliest moment one more may free), with the robot's row locked
    until the caller's transaction ends: call it in one, with ``reserve_sends``.

    A message counts from its reservation (in flight) or its answer until ``window_s`` later: the robot
    received it somewhere in between, so the robot's own count over any window is never above this one."""
    found = conn.execute(_LOCK_ROBOT_SQL, (robot_id,)).fetchone()
    if found is None:  # deleted meanwhile
        return 0, datetime.now(UTC) + timedelta(seconds=ROBOT_WINDOW_S)
    per_minute, window_s = found
    conn.execute(_FORGET_SQL, (robot_id, window_s))
    # An aggregate's one row.
    counted, free_at = conn.execute(_IN_WINDOW_SQL, (window_s, robot_id)).fetchone()  # type: ignore[misc]
    return per_minute - counted, free_at


def reserve_sends(conn: psycopg.Connection, robot_id: UUID, count: int, lease_s: float) -> list[int]:
    """Counts ``count`` messages about to be sent (in flight until ``lease_s`` from now); their ids."""
    if count <= 0:
        return []
    return [row[0] for row in conn.execute(_RESERVE_SQL, (robot_id, lease_s, count))]


def answered(conn: psycopg.Connection, send_id: int) -> None:
    """The robot answered a message: it counts from now, not to the end of its lease."""
    conn.execute("UPDATE robot_sends SET at = clock_timestamp() WHERE id = %s", (send_id,))


def release_sends(conn: psycopg.Connection, send_ids: list[int]) -> None:
    """Forgets reserved messages that were not sent after all (their delivery failed before them)."""
    if send_ids:
        conn.execute("DELETE FROM robot_sends WHERE id = ANY(%s)", (send_ids,))
