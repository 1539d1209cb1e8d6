"""Webhook administration: register a URL for a role's kinds (or chosen kinds) within a place scope.

A URL whose host is not public is refused here (and again at each delivery, see ``alerts.webhooks``)
unless ``PATROLNET_WEBHOOK_ALLOW`` names it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerts.auth import ROLE_KINDS
from alerts.http import Pool, Settings
from alerts.models import EventKind, Role
from alerts.queries import scoped_where
from alerts.routes_admin import Admin, check_within
from alerts.webhooks import TargetPolicy

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
RESOLVE_TIMEOUT_S = 5.0


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
        if not self.kinds and self.role is None:
            raise ValueError("give role or kinds")
        if not self.kinds and not ROLE_KINDS[self.role]:
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


_COLUMNS = "id, url, kinds, sub_district, community, grid, site, secret <> '', created_by"


def _webhook(row: tuple) -> Webhook:
    id_, url, kinds, sd, c, g, s, signed, by = row
    return Webhook(id=id_, url=url, kinds=kinds, sub_district=sd, community=c, grid=g, site=s, signed=signed,
                   created_by=by)  # fmt: skip


@router.get("", summary="Registered webhooks")
async def list_webhooks(pool: Pool, who: Admin) -> list[Webhook]:
    where, params = scoped_where(who, None, "w")
    async with pool.connection() as conn:
        sql = f"SELECT {_COLUMNS} FROM webhooks w WHERE active AND {where} ORDER BY created_at"
        return [_webhook(r) for r in await (await conn.execute(sql, params)).fetchall()]


@router.post("", status_code=201, summary="Register a webhook")
async def add_webhook(pool: Pool, settings: Settings, who: Admin, body: WebhookIn) -> Webhook:
    # An admin scoped to a place registers hooks within it: unset levels take its scope.
    body = body.model_copy(update={level: getattr(body, level) or value for level, value in who.scope.items()})
    check_within(who, body)
    policy = TargetPolicy.parse(settings.webhook_allow)
    try:
        refused = await asyncio.wait_for(asyncio.to_thread(policy.refusal, body.url), RESOLVE_TIMEOUT_S)
    except TimeoutError:
        refused = "its host name did not resolve in time"
    if refused:
        raise HTTPException(422, f"url: {refused}; internal receivers need PATROLNET_WEBHOOK_ALLOW")
    id_ = uuid4()
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "INSERT INTO webhooks (id, url, secret, kinds, sub_district, community, grid, site, created_by)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    id_,
                    body.url,
                    body.secret,
                    list(body.all_kinds()),
                    body.sub_district,
                    body.community,
                    body.grid,
                    body.site,
                    who.name,
                ),
            )
        ).fetchone()
    log.info("%s registered webhook %s for %s", who.name, body.url, body.all_kinds())
    return _webhook(row)


@router.delete("/{webhook_id}", status_code=204, summary="Stop a webhook (its delivery log stays)")
async def remove_webhook(pool: Pool, webhook_id: UUID, who: Admin) -> None:
    where, params = scoped_where(who, None, "w")
    async with pool.connection() as conn:
        sql = f"UPDATE webhooks w SET active = false WHERE w.id = %s AND active AND {where} RETURNING id"
        if await (await conn.execute(sql, [webhook_id, *params])).fetchone() is None:
            raise HTTPException(404, f"no webhook {webhook_id} that this key administers")


@router.get("/{webhook_id}/deliveries", summary="A webhook's delivery log, newest first")
async def deliveries(
    pool: Pool, webhook_id: UUID, who: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[Delivery]:
    where, params = scoped_where(who, None, "w")
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT d.id, d.alert_id, d.seq, d.change, d.state, d.attempts, d.last_status, d.last_error,"
                " d.created_at, d.delivered_at FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
                f" WHERE w.id = %s AND {where} ORDER BY d.id DESC LIMIT %s",
                [webhook_id, *params, limit],
            )
        ).fetchall()
    fields = list(Delivery.model_fields)
    return [Delivery(**dict(zip(fields, r, strict=True))) for r in rows]
