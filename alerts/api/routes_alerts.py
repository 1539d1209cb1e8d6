"""Alert routes: the filtered list, the live stream, one alert in full, and the desk actions (their SQL is in
alerts.store.alert_queries: handlers validate, call and shape)."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from alerts.api.http import Acknowledger, Pool, Reader, api_key, base_url, key_check, refusal, visible_alert
from alerts.api.stream import latest_seq, sse_events
from alerts.auth import Permission
from alerts.core.models import AlertStatus, EventKind, EventState, Place, Severity
from alerts.coverage import may_change
from alerts.store.alert_queries import (
    ACTIONS,
    EventRow,
    alert_events,
    alert_history,
    alerts_page_json,
    apply_action,
)
from alerts.store.grids import GridTeam, grid_team
from alerts.store.queries import AlertFilter, AlertPage, decode_cursor, encode_cursor, where
from alerts.store.rows import StoredAlert

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
LAST_EVENT_ID = re.compile(r"[0-9]{1,18}", re.ASCII)  # a seq: ASCII digits that fit a bigint


class AlertList(BaseModel):
    items: list[StoredAlert] = Field(description="Alerts, newest first.")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class StatusChange(BaseModel):
    note: str = Field(default="", max_length=2000, description="What the desk did or saw.")


class HistoryEntry(BaseModel):
    at: datetime = Field(description="When.")
    actor: str = Field(description="Who: the person's name, or the name of the key's holder.")
    person_id: UUID | None = Field(description="The person's id, when a signed-in person acted (null for a key).")
    action: str = Field(
        description="acknowledge, resolve, false-alarm, assign, escalate, unacknowledge, reply, or a case's step"
        " (case-assign ...)."
    )
    from_status: AlertStatus = Field(description="Status before.")
    to_status: AlertStatus = Field(description="Status after.")
    note: str = Field(description="What the desk wrote.")


class EventSummary(BaseModel):
    id: UUID = Field(description="The event's id.")
    ts: datetime = Field(description="When it happened.")
    kind: EventKind = Field(description="Its kind.")
    type: str = Field(description="What happened.")
    state: EventState = Field(description="start, update or end.")
    severity: Severity = Field(description="How urgent.")
    place: Place = Field(description="Where, device included.")
    source: str = Field(description="The node that raised it.")
    title: str = Field(description="One line.")
    attributes: dict[str, Any] = Field(description="Readings, confirmation and the like.")
    snapshot_url: str | None = Field(description="The camera picture (JPEG or PNG), if the event has one.")


class AlertDetail(BaseModel):
    alert: StoredAlert = Field(description="The alert.")
    events: list[EventSummary] = Field(description="Its events, oldest first (the newest 200).")
    history: list[HistoryEntry] = Field(description="What desks did with it, oldest first.")
    grid_team: GridTeam = Field(description="Who answers for its grid: the leader and team (none when not recorded).")


def before_of(page: AlertPage) -> tuple[datetime, UUID] | None:
    try:
        return decode_cursor(page.cursor) if page.cursor is not None else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("", summary="List alerts, newest first, with filters and a cursor", response_model=AlertList)
async def list_alerts(pool: Pool, who: Reader, page: Annotated[AlertPage, Query()]) -> Response:
    # The busiest route: the database writes each alert's JSON (an AlertList item's, see ALERT_JSON), and the
    # page is joined here, never a model per row; response_model documents what this is.
    # The plain case of this route is answered by alerts.api.list_shortcut before it gets here.
    items, last = await alerts_page_json(pool, who, page, before_of(page))
    return Response(list_json(items, last), media_type="application/json")


def list_json(items: list[str], last: tuple[datetime, UUID] | None) -> str:
    """An AlertList's JSON from its items' JSON and the (time, id) of the last one when more follow."""
    cursor = json.dumps(encode_cursor(*last)) if last is not None else "null"
    return f'{{"items":[{",".join(items)}],"next_cursor":{cursor}}}'


@router.get(
    "/stream",
    summary="Live alert changes as Server-Sent Events; resumes from Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "id: seq, event: change, data: alert"}},
)
async def stream_alerts(
    request: Request,
    pool: Pool,
    who: Reader,
    key: Annotated[str | None, Depends(api_key)],
    flt: Annotated[AlertFilter, Query()],
    last_event_id: Annotated[str | None, Header(description="id of the last event received")] = None,
) -> StreamingResponse:
    where(flt, who)  # a kind the role may not read: 403 now, not a broken stream later
    if last_event_id is None:
        after = await latest_seq(pool)
    elif LAST_EVENT_ID.fullmatch(last_event_id):
        after = int(last_event_id)
    else:
        raise HTTPException(400, "Last-Event-ID must be an id this stream sent")
    return StreamingResponse(
        sse_events(pool, request.app.state.notifier, flt, who, after, key_check(request, key or "")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def snapshot_url(base: str, event_id: UUID) -> str:
    return f"{base}/api/v1/events/{event_id}/snapshot"


def _event_summary(base: str, row: EventRow) -> EventSummary:
    fields = row._asdict()
    has_snapshot = fields.pop("has_snapshot")
    return EventSummary(**fields, snapshot_url=snapshot_url(base, row.id) if has_snapshot else None)


@router.get("/{alert_id}", summary="One alert with its events, their snapshots and its audit trail")
async def get_alert(request: Request, pool: Pool, alert_id: UUID, who: Reader) -> AlertDetail:
    alert = await visible_alert(pool, alert_id, who)
    base = base_url(request)
    return AlertDetail(
        alert=alert,
        events=[_event_summary(base, e) for e in await alert_events(pool, alert_id)],
        history=[HistoryEntry(**h._asdict()) for h in await alert_history(pool, alert_id)],
        grid_team=await grid_team(pool, alert.place.community, alert.place.grid),
    )


@router.post(
    "/{alert_id}/{action}",
    summary="acknowledge, resolve or false-alarm",
    responses={
        403: refusal(
            "a coverage notice: only the desk the alert is routed to may act on it; or a role that may only"
            " acknowledge (a grid worker)"
        ),
        409: refusal("the alert's status does not allow the action"),
    },
)
async def change_status(
    pool: Pool, alert_id: UUID, action: str, who: Acknowledger, body: StatusChange | None = None
) -> StoredAlert:
    if action not in ACTIONS:
        raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action != "acknowledge" and not who.may(Permission.ACT):
        raise HTTPException(403, f"role {who.role} may only acknowledge alerts")
    alert = await visible_alert(pool, alert_id, who)
    if (refused := may_change(who, alert)) is not None:
        raise HTTPException(403, refused)
    if alert.status not in ACTIONS[action][0]:
        raise HTTPException(409, f"cannot {action} an alert that is {alert.status}")
    updated = await apply_action(pool, alert_id, action, who, body.note if body else "")
    if updated is None:
        raise HTTPException(409, "the alert changed meanwhile; reload it")
    log.info("%s: %s %s", who.name, action, alert_id)
    return updated
