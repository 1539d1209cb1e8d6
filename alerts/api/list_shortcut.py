"""The desks' busiest request, ``GET /api/v1/alerts`` with an API key, answered without FastAPI's routing and
dependency resolution, which cost more of the API's CPU than the page's query (issue 18's py-spy profile).

Only the plain case takes the short way: an API key the key cache or the database knows, of a role that reads
alerts, and query parameters that the page model takes as they are. Anything else (a session cookie, no key or
an unknown one, a role without the permission, a parameter the model refuses, a repeated one that is not a list,
a cursor that does not decode, a kind the role may not read, a value PostgreSQL refuses) goes on to the route,
which answers as it always did, so a refusal reads the same either way. The page is the same bytes the route
writes (``list_json``). It sits inside ``Guard`` (the answer gets the same headers) and the metrics middleware,
and names the route in the scope, so the request is counted under the route's template.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from alerts.api.http import key_of, lookup
from alerts.api.routes_alerts import list_json, router
from alerts.auth import Permission, Principal
from alerts.store.alert_queries import alerts_page_json
from alerts.store.queries import AlertPage, decode_cursor

log = logging.getLogger(__name__)

PATH = "/api/v1/alerts"
_LISTS = frozenset(name for name, field in AlertPage.model_fields.items() if field.annotation is not None
                   and getattr(field.annotation, "__origin__", None) is list)  # fmt: skip
_FIELDS = frozenset(AlertPage.model_fields)
ROUTE = next(r for r in router.routes if isinstance(r, APIRoute) and r.path == PATH and "GET" in (r.methods or ()))
"""The route this stands in for: named in the scope so that metrics count the request under its template."""


class AlertListShortcut:
    """Plain ASGI middleware answering the plain case of the alert list; see the module docstring."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body = await self._page(Request(scope))
        if body is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _page(self, request: Request) -> bytes | None:
        """The page's JSON, or None where the route should answer."""
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
            items, last = await alerts_page_json(self.api.state.pool, who, page, before)
        except (ValueError, psycopg.DataError):
            # pydantic's ValidationError, a bad cursor and ForbiddenKind are ValueErrors: the route says which.
            return None
        return list_json(items, last).encode()
