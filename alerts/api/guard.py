"""What every request passes before a route sees it, and what every answer carries.

On the way in (``Guard``, plain ASGI middleware, in this order):

- a NUL character in the path or the query string: 422 (PostgreSQL cannot store
  one, and a stream would fail only after its 200);
- a request with a body to ``/api/v1`` (but a sign-in): its key, or its session
  cookie and CSRF token, is checked from the headers first, and a missing or
  unknown key or session gets 401, a missing CSRF token or a role the route
  refuses 403, before a byte of the body is read (so an anonymous upload is
  never spooled);
- a ``Content-Length`` over the limit, or a chunked body that grows past it: 413.
  The limit is ``PATROLNET_BODY_MAX_BYTES`` (64 KiB), and for citizen reports
  ``PATROLNET_REPORT_MAX_BYTES`` (the photos together) plus room for the text and the multipart framing (and so
  for shops' check-ins and grid imports), and for a chunk of a video clip ``PATROLNET_CLIP_CHUNK_MAX_BYTES`` (1 MiB).

On the way out, every answer gets ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, a
``Content-Security-Policy`` (the page sets its own, see ``page_policy``) and,
unless the route chose, ``Cache-Control: no-store``.

Example:
    >>> page_policy("<style>p{}</style><script>go()</script>").split("; ")[1]
    "script-src 'sha256-5KYv+PUboo5h+0+YAtGRPbwv5d/QxzHslP4YGnUaxRw='"
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.api.http import ApiSettings, Require, identify, key_of
from alerts.auth import Permission

log = logging.getLogger(__name__)

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# Swagger UI and ReDoc load their scripts from a CDN: they only may not be framed.
DOCS_POLICY = "frame-ancestors 'none'"
DOCS_PATHS = ("/docs", "/redoc")
SIGN_IN = ("POST", "/api/v1/session")  # the one request with a body and no caller yet
FORM_ROOM = 65_536  # a report's text fields and the multipart framing around the photos
UPLOADS = frozenset({"/api/v1/reports", "/api/v1/shops/checkins", "/api/v1/grids/import"})  # photos; spreadsheets
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
PHOTO_STEPS = re.compile(r"/api/v1/cases/[^/]+/(rectify|recheck)")  # a case's steps with photos: as a report
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def page_policy(html: str) -> str:
    """The CSP of a page: its own inline scripts and styles (by hash), its API on the same origin, nothing else."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    scripts, styles = " ".join(hashes["script"]) or "'none'", " ".join(hashes["style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; img-src 'self' blob:;"
        " media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _permissions(dependant: Dependant) -> list[Permission]:
    found = [d.call.permission for d in dependant.dependencies if isinstance(d.call, Require)]
    return found + [p for d in dependant.dependencies for p in _permissions(d)]


class BodyTooLarge(HTTPException):
    """A body that grew past its limit while being read; FastAPI passes it on as the 413 it is."""


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The checks above, for an app (its settings are read at each request) and the routes it serves."""

    def __init__(self, app: ASGIApp, api: FastAPI, routes: list[APIRoute]) -> None:
        self.app = app
        self.api = api
        self.routes = [(route, _permissions(route.dependant)) for route in routes]

    def _needed(self, scope: Scope) -> list[Permission]:
        for route, permissions in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return permissions
        return []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._headed(scope, send)
        path: str = scope["path"]
        if "\x00" in path or b"\x00" in unquote_to_bytes(scope["query_string"]):
            await _answer(send, 422, "a NUL character is not allowed in the path or a query parameter")
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.isascii() or not length.isdigit()):
            await _answer(send, 400, "Content-Length must be a number of bytes")
            return
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        signing_in = (scope["method"], path) == SIGN_IN
        if has_body and path.startswith("/api/v1/") and not signing_in and not await self._allowed(scope, send):
            return
        settings: ApiSettings = self.api.state.settings
        photos = path in UPLOADS or PHOTO_STEPS.fullmatch(path) is not None
        limit = settings.report_max_bytes + FORM_ROOM if photos else settings.body_max_bytes
        if path.startswith("/api/v1/clips/") and path.endswith("/content"):
            limit = settings.clip_chunk_max_bytes
        if length is not None and int(length) > limit:
            await _answer(send, 413, f"the request body is larger than {limit} bytes")
            return
        await self.app(scope, self._capped(receive, limit), send)

    async def _allowed(self, scope: Scope, send: Send) -> bool:
        """Whether the caller the headers name may send this request its body; answers 401 or 403 if not."""
        headers = Headers(scope=scope)
        try:
            who = await identify(Request(scope), key_of(headers.get("authorization"), headers.get("x-api-key")))
        except HTTPException as exc:
            await _answer(send, exc.status_code, exc.detail, dict(exc.headers or {}))
            return False
        refused = [p for p in self._needed(scope) if not who.may(p)]
        if refused:
            await _answer(send, 403, f"role {who.role} may not use this route ({refused[0]})")
            return False
        return True

    @staticmethod
    def _capped(receive: Receive, limit: int) -> Receive:
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(413, f"the request body is larger than {limit} bytes")
            return message

        return capped

    @staticmethod
    def _headed(scope: Scope, send: Send) -> Send:
        policy = DOCS_POLICY if scope["path"].startswith(DOCS_PATHS) else API_POLICY

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers.setdefault("content-security-policy", policy)
                headers.setdefault("cache-control", "no-store")
            await send(message)

        return headed
