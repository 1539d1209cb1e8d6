"""Escalation chains: what happens to an alert nobody acknowledges (``alerts.notify.escalation``).

Any admin reads the chains; only an admin of the whole district (no place scope) replaces them, since a
chain applies everywhere. Replacing is all at once, in one transaction; escalations under way follow the new
chains from their next step.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException

from alerts.api.http import Admin, Pool
from alerts.store import escalation
from alerts.store.escalation import Chain, ChainIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/escalation", tags=["escalation"])


@router.get("/chains", summary="The escalation chains")
async def list_chains(pool: Pool, who: Admin) -> list[Chain]:
    return await escalation.list_chains(pool)


@router.put(
    "/chains",
    summary="Replace every escalation chain",
    description="Steps in order of their delays (seconds unacknowledged); targets: person (person_id), grid_team,"
    " desk (level community, sub_district or district; role, default the alert's route), robot (webhook_id of a"
    " wecom, dingtalk or feishu webhook). One chain per kind, route and min_severity.",
)
async def replace_chains(pool: Pool, who: Admin, chains: list[ChainIn]) -> list[Chain]:
    if who.scope:
        raise HTTPException(403, "chains apply to the whole district: only an admin without a place scope sets them")
    try:
        stored = await escalation.replace_chains(pool, chains)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    log.info("%s replaced the escalation chains: %d", who.name, len(stored))
    return stored
