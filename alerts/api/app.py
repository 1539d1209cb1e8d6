"""The alert API for police desks, fire brigades, operators, admins and citizen reporters (FastAPI).

Every route under ``/api/v1`` (but signing in) and ``/metrics`` needs an API
key (``Authorization: Bearer <key>`` or ``X-API-Key``) or a signed-in person's
session cookie (``alerts.api.routes_people``), and shows only the kinds and
places the key's role and scope allow. Bad requests get a 4xx with a message,
never a 500: every 4xx body is an ``ErrorBody`` (``detail``, and for invalid
parameters ``errors``, one line each), as the OpenAPI document says. The routes
live in ``alerts.api.routes_*``, ``alerts.api.reports`` and ``alerts.api.metrics``;
``alerts.api.guard`` checks keys, body sizes and NUL characters before them and adds
the security headers; this module assembles them.

Run it with ``patrolnet api``; ``create_app(database_url)`` builds the app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from psycopg_pool import AsyncConnectionPool

from alerts.api import (
    metrics,
    report_links,
    reports,
    routes_admin,
    routes_alerts,
    routes_cap,
    routes_cases,
    routes_clips,
    routes_escalation,
    routes_grids,
    routes_people,
    routes_sensors,
    routes_shops,
    routes_stats,
    routes_webhooks,
    routes_wording,
    shop_page,
)
from alerts.api.guard import Guard, page_policy
from alerts.api.http import ApiSettings, ErrorBody, Pool, Who
from alerts.api.list_shortcut import AlertListShortcut
from alerts.api.stream import ChangeNotifier
from alerts.auth import Principal
from alerts.core.collector import settle_collector
from alerts.core.settings import setting
from alerts.notify.escalation import EscalationRunner
from alerts.store.queries import ForbiddenKind

log = logging.getLogger(__name__)


def create_app(database_url: str, settings: ApiSettings | None = None, pool_size: int = 10) -> FastAPI:
    pool = AsyncConnectionPool(database_url, open=False, min_size=2, max_size=pool_size, kwargs={"autocommit": True})
    session_cache: dict = {}
    notifier = ChangeNotifier(database_url, sessions_ended=session_cache.clear)
    escalations = EscalationRunner(pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=30)
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).fetchone()
        app.state.timescale = row is not None
        notifier.start()
        escalations.start()
        settle_collector()
        yield
        await escalations.stop()
        await notifier.stop()
        await pool.close()

    app = FastAPI(
        title="patrolnet alert API",
        version="1",
        description="Alerts from patrolnet edge nodes for police desks, fire brigades and operators; citizen "
        "reports; sensor readings and device health; a CAP 1.2 feed; webhooks.",
        lifespan=lifespan,
        responses={"4XX": {"model": ErrorBody, "description": "refused: detail says why"}},
    )
    app.state.pool = pool
    app.state.notifier = notifier
    app.state.settings = settings or ApiSettings.from_env()
    if not app.state.settings.public_url:
        log.info("PATROLNET_PUBLIC_URL is not set: links in CAP messages and alert details are relative paths")
    app.state.key_cache = {}
    app.state.session_cache = session_cache
    app.state.timescale = False
    app.state.metrics = metrics.ApiMetrics()
    modules = (
        routes_alerts, routes_cap, routes_sensors, reports, routes_admin, routes_webhooks, routes_people, metrics,
        routes_grids, routes_escalation, routes_clips, report_links, routes_shops, shop_page, routes_cases,
        routes_stats, routes_wording,
    )  # fmt: skip
    app.add_middleware(AlertListShortcut)
    app.add_middleware(Guard, api=app, routes=[route for module in modules for route in module.router.routes])
    app.state.metrics.install(app)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": problems})

    @app.exception_handler(ForbiddenKind)
    async def _forbidden_kind(request: Request, exc: ForbiddenKind) -> JSONResponse:
        return JSONResponse(status_code=403, content={"detail": str(exc)})

    @app.exception_handler(psycopg.DataError)
    async def _bad_value(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # The last guard: a value the checks above let through but PostgreSQL refuses is still the caller's.
        log.warning("refused by the database: %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=422, content={"detail": f"a value was refused: {exc.diag.message_primary}"})

    for module in modules:
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"], summary="Liveness and database reachability; no key needed")
    async def healthz(pool: Pool) -> dict[str, str]:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        return {"status": "ok"}

    html = resources.files("alerts.api").joinpath("dashboard.html").read_text(encoding="utf-8")
    policy = page_policy(html)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": policy})

    @app.get("/api/v1/whoami", tags=["auth"], summary="The role and places of the calling key or person")
    async def whoami(who: Who) -> Principal:
        return who

    return app


def app_from_env() -> FastAPI:
    """The app for ``PATROLNET_DATABASE_URL`` (or its ``_FILE``): uvicorn's factory for ``patrolnet api``."""
    return create_app(setting("PATROLNET_DATABASE_URL"))
