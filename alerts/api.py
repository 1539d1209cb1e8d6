"""The alert API for police desks, fire brigades and operators (FastAPI).

Every route under ``/api/v1`` needs an API key (``Authorization: Bearer <key>``
or ``X-API-Key``) and shows only the kinds and places the key's role and scope
allow. Bad requests get a 4xx with a message, never a 500.

Run it with ``patrolnet api``; ``create_app(database_url)`` builds the app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from alerts.auth import LOOKUP_SQL, Principal, hash_key, principal_from_row
from alerts.models import Alert, AlertStatus
from alerts.queries import AlertFilter, AlertPage, ForbiddenKind, decode_cursor, encode_cursor, where
from alerts.store import ALERT_COLUMNS, CHANGES_CHANNEL, CHANGES_LOCK, INSERT_CHANGE, row_to_alert
from alerts.stream import ChangeNotifier, latest_seq, sse_events

log = logging.getLogger(__name__)


class AlertList(BaseModel):
    items: list[Alert] = Field(description="Alerts, newest first.")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class StatusChange(BaseModel):
    note: str = Field(default="", max_length=2000, description="What the desk did or saw.")


class HistoryEntry(BaseModel):
    at: str
    actor: str
    action: str
    from_status: AlertStatus
    to_status: AlertStatus
    note: str


class AlertDetail(BaseModel):
    alert: Alert
    history: list[HistoryEntry] = Field(description="What desks did with it, oldest first.")


# Which statuses each desk action may move an alert from, and to.
ACTIONS: dict[str, tuple[tuple[AlertStatus, ...], AlertStatus]] = {
    "acknowledge": ((AlertStatus.NEW,), AlertStatus.ACKNOWLEDGED),
    "resolve": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.RESOLVED),
    "false-alarm": ((AlertStatus.NEW, AlertStatus.ACKNOWLEDGED), AlertStatus.FALSE_ALARM),
}


async def principal(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key, instead of Authorization")] = None,
) -> Principal:
    key = x_api_key
    if key is None and authorization is not None:
        scheme, _, token = authorization.partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        raise HTTPException(401, "an API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(LOOKUP_SQL, (hash_key(key),))).fetchone()
    if row is None:
        raise HTTPException(401, "unknown or revoked API key", {"WWW-Authenticate": "Bearer"})
    return principal_from_row(row)


Who = Annotated[Principal, Depends(principal)]


def create_app(database_url: str) -> FastAPI:
    pool = AsyncConnectionPool(database_url, open=False, min_size=1, max_size=10, kwargs={"autocommit": True})
    notifier = ChangeNotifier(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        notifier.start()
        yield
        await notifier.stop()
        await pool.close()

    app = FastAPI(
        title="patrolnet alert API",
        version="1",
        description="Alerts from patrolnet edge nodes for police desks, fire brigades and operators.",
        lifespan=lifespan,
    )
    app.state.pool = pool

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": problems})

    def where_or_403(flt: AlertFilter, who: Principal) -> tuple[str, list]:
        try:
            return where(flt, who)
        except ForbiddenKind as exc:
            raise HTTPException(403, str(exc)) from exc

    async def visible_alert(alert_id: UUID, who: Principal) -> Alert:
        clause, params = where_or_403(AlertFilter(), who)
        async with pool.connection() as conn:
            sql = f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = %s AND {clause}"
            row = await (await conn.execute(sql, [alert_id, *params])).fetchone()
        if row is None:
            raise HTTPException(404, f"no alert {alert_id} that this key may see")
        return row_to_alert(row)

    @app.get("/healthz", tags=["health"], summary="Liveness and database reachability; no key needed")
    async def healthz() -> dict[str, str]:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("alerts").joinpath("dashboard.html").read_text(encoding="utf-8"))

    @app.get("/api/v1/whoami", tags=["auth"], summary="The role and places of the calling key")
    async def whoami(who: Who) -> Principal:
        return who

    @app.get("/api/v1/alerts", tags=["alerts"], summary="List alerts, newest first, with filters and a cursor")
    async def list_alerts(who: Who, page: Annotated[AlertPage, Query()]) -> AlertList:
        clause, params = where_or_403(page, who)
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

    @app.get(
        "/api/v1/alerts/stream",
        tags=["alerts"],
        summary="Live alert changes as Server-Sent Events; resumes from Last-Event-ID",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream_alerts(
        who: Who,
        flt: Annotated[AlertFilter, Query()],
        last_event_id: Annotated[str | None, Header(description="id of the last event received")] = None,
    ) -> StreamingResponse:
        where_or_403(flt, who)
        if last_event_id is None:
            after = await latest_seq(pool)
        elif last_event_id.isdigit():
            after = int(last_event_id)
        else:
            raise HTTPException(400, "Last-Event-ID must be an id this stream sent")
        return StreamingResponse(
            sse_events(pool, notifier, flt, who, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"], summary="One alert with its audit trail")
    async def get_alert(alert_id: UUID, who: Who) -> AlertDetail:
        alert = await visible_alert(alert_id, who)
        async with pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT at, actor, action, from_status, to_status, note FROM alert_history"
                    " WHERE alert_id = %s ORDER BY at, id",
                    (alert_id,),
                )
            ).fetchall()
        history = [
            HistoryEntry(at=at.isoformat(), actor=actor, action=action, from_status=f, to_status=t, note=note)
            for at, actor, action, f, t, note in rows
        ]
        return AlertDetail(alert=alert, history=history)

    @app.post("/api/v1/alerts/{alert_id}/{action}", tags=["alerts"], summary="acknowledge, resolve or false-alarm")
    async def change_status(alert_id: UUID, action: str, who: Who, body: StatusChange | None = None) -> Alert:
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        allowed_from, to_status = ACTIONS[action]
        alert = await visible_alert(alert_id, who)
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

    return app
