"""Webhook administration: register a URL for a role's kinds (or chosen kinds) within a place scope.

A URL whose host is not public is refused here (and again at each delivery, see ``alerts.notify.webhooks``)
unless ``PATROLNET_WEBHOOK_ALLOW`` names it. A chat-group robot (WeCom, DingTalk, Feishu) is registered
here too, with its ``format`` and its mentions, message kind and limit (``alerts.notify.robots``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query

from alerts.api.http import Admin, Pool, Settings
from alerts.api.routes_admin import check_within
from alerts.notify.webhooks import TargetPolicy
from alerts.store import webhook_registry
from alerts.store.webhook_registry import LINKED, Delivery, Webhook, WebhookIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])
RESOLVE_TIMEOUT_S = 5.0


@router.get("", summary="Registered webhooks")
async def list_webhooks(pool: Pool, who: Admin) -> list[Webhook]:
    return await webhook_registry.list_webhooks(pool, who)


@router.post(
    "",
    status_code=201,
    summary="Register a webhook or a chat-group robot",
    description="format json POSTs the generic JSON body; wecom, dingtalk and feishu send a chat-group robot's"
    " messages (Chinese first, English second), at most per_minute in any window_s seconds, the rest folded"
    " into one summary.",
)
async def add_webhook(pool: Pool, settings: Settings, who: Admin, body: WebhookIn) -> Webhook:
    # An admin scoped to a place registers hooks within it: unset levels take its scope.
    body = body.model_copy(update={level: getattr(body, level) or value for level, value in who.scope.items()})
    check_within(who, body)
    if body.message in LINKED and not settings.public_url:
        raise HTTPException(422, f"message: {body.message} links to the alert, which needs PATROLNET_PUBLIC_URL")
    policy = TargetPolicy.parse(settings.webhook_allow)
    try:
        refused = await asyncio.wait_for(asyncio.to_thread(policy.refusal, body.url), RESOLVE_TIMEOUT_S)
    except TimeoutError:
        refused = "its host name did not resolve in time"
    if refused:
        raise HTTPException(422, f"url: {refused}; internal receivers need PATROLNET_WEBHOOK_ALLOW")
    hook = await webhook_registry.add_webhook(pool, body, who.name)
    log.info("%s registered %s webhook %s for %s", who.name, body.format, hook.id, hook.kinds)
    return hook


@router.delete("/{webhook_id}", status_code=204, summary="Stop a webhook (its delivery log stays)")
async def remove_webhook(pool: Pool, webhook_id: UUID, who: Admin) -> None:
    if not await webhook_registry.stop_webhook(pool, who, webhook_id):
        raise HTTPException(404, f"no webhook {webhook_id} that this key administers")


@router.get("/{webhook_id}/deliveries", summary="A webhook's delivery log, newest first")
async def deliveries(
    pool: Pool, webhook_id: UUID, who: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[Delivery]:
    return await webhook_registry.list_deliveries(pool, who, webhook_id, limit)
