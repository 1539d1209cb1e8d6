"""Alert routes: the filtered list, the live stream, one alert in full, and the desk actions."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from alerts.http import Actor, Pool, Reader, api_key, base_url, key_check, refusal, visible_alert
from alerts.models import AlertStatus, EventKind, EventState, Place, Severity
from alerts.queries import AlertFilter, AlertPage, decode_cursor, encode_cursor, where
from alerts.rows import ALERT_COLUMNS, StoredAlert, row_to_alert
from alerts.store import CHANGES_CHANNEL, CHANGES_LOCK, INSERT_CHANGE
from alerts.stream import latest_seq, sse_events

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
    actor: str = Field(description="Which key's holder.")
    action: str = Field(description="acknowledge, resolve or false-alarm.")
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


# Which statuses each desk action may move an alert from, and to.
ACTIONS: dict[str, tuple[tuple[AlertStatus, ...], AlertStatus]] = {
    "acknowledge": ((AlertStatus.NEW,), AlertStatus.ACKNOWLEDGED),
    "resolve": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.RESOLVED),
    "false-alarm": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.FALSE_ALARM),
}


async def page_of_alerts(pool: Pool, who: Reader, page: AlertPage) -> AlertList:
    """One page of the alerts a caller may see, newest first."""
    clause, params = where(page, who)
    if page.cursor is not None:
        try:
            ts, id_ = decode_cursor(page.cursor)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        clause += " AND (a.ts, a.id) < (%s, %s)"
        params += [ts, id_]
    sql = f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE {clause} ORDER BY a.ts DESC, a.id DESC LIMIT %s"
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, [*params, page.limit + 1])).fetchall()
    items = [row_to_alert(r) for r in rows[: page.limit]]
    more = len(rows) > page.limit
    return AlertList(items=items, next_cursor=encode_cursor(items[-1].ts, items[-1].id) if more else None)


@router.get("", summary="List alerts, newest first, with filters and a cursor", response_model=AlertList)
async def list_alerts(pool: Pool, who: Reader, page: Annotated[AlertPage, Query()]) -> Response:
    # The busiest route: serialised once here, rather than validated again against the response model.
    return Response((await page_of_alerts(pool, who, page)).model_dump_json(), media_type="application/json")


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


_EVENTS_SQL = """
SELECT e.id, e.ts, e.kind, e.type, e.state, e.severity, e.sub_district, e.community, e.grid, e.site, e.device,
       e.source, e.title, e.attributes, e.snapshot IS NOT NULL
FROM (SELECT event_id FROM alert_events WHERE alert_id = %s ORDER BY linked_at DESC LIMIT 200) l
JOIN events e ON e.id = l.event_id
ORDER BY e.ts, e.id"""


def snapshot_url(base: str, event_id: UUID) -> str:
    return f"{base}/api/v1/events/{event_id}/snapshot"


@router.get("/{alert_id}", summary="One alert with its events, their snapshots and its audit trail")
async def get_alert(request: Request, pool: Pool, alert_id: UUID, who: Reader) -> AlertDetail:
    alert = await visible_alert(pool, alert_id, who)
    async with pool.connection() as conn:
        history = await (
            await conn.execute(
                "SELECT at, actor, action, from_status, to_status, note FROM alert_history"
                " WHERE alert_id = %s ORDER BY at, id",
                (alert_id,),
            )
        ).fetchall()
        events = await (await conn.execute(_EVENTS_SQL, (alert_id,))).fetchall()
    base = base_url(request)
    return AlertDetail(
        alert=alert,
        events=[
            EventSummary(
                id=id_,
                ts=ts,
                kind=kind,
                type=type_,
                state=state,
                severity=severity,
                place=Place(sub_district=sd, community=c, grid=g, site=s, device=d),
                source=source,
                title=title,
                attributes=attributes,
                snapshot_url=snapshot_url(base, id_) if has_snapshot else None,
            )
            for id_, ts, kind, type_, state, severity, sd, c, g, s, d, source, title, attributes, has_snapshot in events
        ],
        history=[
            HistoryEntry(at=at, actor=actor, action=action, from_status=f, to_status=t, note=note)
            for at, actor, action, f, t, note in history
        ],
    )


@router.post(
    "/{alert_id}/{action}",
    summary="acknowledge, resolve or false-alarm",
    responses={409: refusal("the alert's status does not allow the action")},
)
async def change_status(
    pool: Pool, alert_id: UUID, action: str, who: Actor, body: StatusChange | None = None
) -> StoredAlert:
    if action not in ACTIONS:
        raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    allowed_from, to_status = ACTIONS[action]
    alert = await visible_alert(pool, alert_id, who)
    if alert.status not in allowed_from:
        raise HTTPException(409, f"cannot {action} an alert that is {alert.status}")
    note = body.note if body else ""
    async with pool.connection() as conn, conn.transaction():
        updated = await (
            await conn.execute(
                f"UPDATE alerts a SET status = %s, status_by = %s, status_at = now(), updated_at = now()"
                f" WHERE a.id = %s AND a.status = ANY(%s) RETURNING {ALERT_COLUMNS}",
                (to_status, who.name, alert_id, list(allowed_from)),
            )
        ).fetchone()
        if updated is None:
            raise HTTPException(409, "the alert changed meanwhile; reload it")
        await conn.execute(
            "INSERT INTO alert_history (alert_id, actor, action, from_status, to_status, note)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (alert_id, who.name, action, alert.status, to_status, note),
        )
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGES_LOCK,))
        await conn.execute(INSERT_CHANGE, (alert_id, to_status))
        await conn.execute(f"NOTIFY {CHANGES_CHANNEL}")
    log.info("%s: %s %s", who.name, action, alert_id)
    return row_to_alert(updated)
