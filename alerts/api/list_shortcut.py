"""The desks' busiest requests, ``GET /api/v1/alerts`` with an API key and the same page as a CAP feed
(``/api/v1/alerts.cap``, which aggregators poll), answered without FastAPI's routing and dependency resolution,
which cost more of the API's CPU than the page's query (issue 18's py-spy profile).

Only the plain case takes the short way: an API key the key cache or the database knows, of a role that reads
alerts, and query parameters that the page model takes as they are. Anything else (a session cookie, no key or
an unknown one, a role without the permission, a parameter the model refuses, a repeated one that is not a list,
a cursor that does not decode, a kind the role may not read, a value PostgreSQL refuses) goes on to the route,
which answers as it always did, so a refusal reads the same either way. The page is the same bytes the route
writes (``list_json``, ``alerts.api.routes_cap.feed``). It sits inside ``Guard`` (the answer gets the same
headers) and the metrics middleware, and names the route in the scope, so the request is counted under the
route's template.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import psycopg
from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from alerts.api import routes_alerts, routes_cap
from alerts.api.http import key_of, lookup
from alerts.api.routes_alerts import list_json
from alerts.api.routes_cap import ATOM_TYPE, feed
from alerts.auth import Permission, Principal
from alerts.store.alert_queries import alerts_page_json
from alerts.store.queries import AlertPage, decode_cursor

log = logging.getLogger(__name__)

_LISTS = frozenset(name for name, field in AlertPage.model_fields.items() if field.annotation is not None
                   and getattr(field.annotation, "__origin__", None) is list)  # fmt: skip
_FIELDS = frozenset(AlertPage.model_fields)

Page = Callable[[Request, Principal, AlertPage, tuple[datetime, UUID] | None], Awaitable[bytes]]


@dataclass(frozen=True)
class _Way:
    """A route the short way stands in for (named in the scope, so that metrics count the request under its
    template), the answer's type, and how to write its page."""

    route: APIRoute
    media_type: bytes
    page: Page


def _route(router: APIRouter, path: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and "GET" in (r.methods or ()))


async def _list(request: Request, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None) -> bytes:
    items, last = await alerts_page_json(request.app.state.pool, who, page, before)
    return list_json(items, last).encode()


async def _feed(request: Request, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None) -> bytes:
    return await feed(request, request.app.state.pool, who, page, before)


WAYS = {
    "/api/v1/alerts": _Way(_route(routes_alerts.router, "/api/v1/alerts"), b"application/json", _list),
    "/api/v1/alerts.cap": _Way(_route(routes_cap.router, "/api/v1/alerts.cap"), ATOM_TYPE.encode(), _feed),
}


class AlertListShortcut:
    """Plain ASGI middleware answering the plain case of the alert list and its feed; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        way = WAYS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        body = await self._page(Request(scope), way) if way is not None else None
        if way is None or body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = way.route
        headers = [(b"content-type", way.media_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _page(self, request: Request, way: _Way) -> bytes | None:
        """The page, or None where the route should answer."""
        key = key_of(request.headers.get("authorization"), request.headers.get("x-api-key"))
        who: Principal | None = await lookup(request, key) if key else None
        if who is None or not who.may(Permission.ALERTS):
            return None
        query = request.query_params
        names = set(query.keys())
        if not names <= _FIELDS or any(len(query.getlist(n)) > 1 for n in names - _LISTS):
            return None
        values = {name: query.getlist(name) if name in _LISTS else query[name] for name in names}
        try:
            page = AlertPage.model_validate(values)
            before = decode_cursor(page.cursor) if page.cursor is not None else None
            return await way.page(request, who, page, before)
        except (ValueError, psycopg.DataError):
            # pydantic's ValidationError, a bad cursor and ForbiddenKind are ValueErrors: the route says which.
            return None
