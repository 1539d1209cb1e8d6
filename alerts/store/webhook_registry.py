"""Registered webhooks and their delivery logs, and the query functions that register, list and stop them.

A webhook is listed, stopped and its log read only where the caller's place scope reaches. Every value is a
bound parameter. The routes in ``alerts.api.routes_webhooks`` check the caller and the target; the deliveries
themselves are ``alerts.notify.webhooks``.

Example:
    >>> WebhookIn(url="https://brigade.example/hook", role="fire").all_kinds()
    [<EventKind.FIRE: 'fire'>]
    >>> WebhookIn(url="ftp://brigade.example/")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for WebhookIn
    url
      Value error, must be an http:// or https:// URL [type=value_error, ...
    ...
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerts.auth import ROLE_KINDS, Principal
from alerts.core.models import EventKind, Role
from alerts.store.queries import scoped_where
from alerts.store.rows import rows_as


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Where to POST (http or https).")
    role: Role | None = Field(default=None, description="Send the kinds this desk reads (or give kinds).")
    kinds: list[EventKind] = Field(default_factory=list, description="Send these kinds.")
    secret: str = Field(default="", max_length=200, description="HMAC-SHA256 key for X-Patrolnet-Signature.")
    sub_district: str | None = Field(default=None, description="Only alerts of this sub-district.")
    community: str | None = Field(default=None, description="Only alerts of this community.")
    grid: str | None = Field(default=None, description="Only alerts of this grid cell.")
    site: str | None = Field(default=None, description="Only alerts of this site.")

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

    def all_kinds(self) -> list[EventKind]:
        return sorted(set(self.kinds) | set(ROLE_KINDS[self.role] if self.role else ()))


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


class Delivery(BaseModel):
    id: int = Field(description="Delivery id (X-Patrolnet-Delivery).")
    alert_id: UUID = Field(description="The alert.")
    seq: int = Field(description="The alert change's sequence number.")
    change: str = Field(description="raised, updated, cleared, acknowledged, ...")
    state: str = Field(description="pending, delivered or failed.")
    attempts: int = Field(description="POSTs tried.")
    last_status: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None = Field(description="Why the last try failed.")
    created_at: datetime = Field(description="When it was queued.")
    delivered_at: datetime | None = Field(description="When the receiver accepted it.")


_COLUMNS = "id, url, kinds, sub_district, community, grid, site, secret <> '', created_by"  # Webhook's fields
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
        **body.model_dump(include={"url", "sub_district", "community", "grid", "site"}),
        kinds=body.all_kinds(),
    )
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO webhooks (id, url, secret, kinds, sub_district, community, grid, site, created_by)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (hook.id, hook.url, body.secret, hook.kinds, hook.sub_district, hook.community, hook.grid, hook.site,
             created_by),
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
