"""What every API route shares: settings, the database pool, the caller and its permissions.

A machine calls with an API key in a header; a person's browser with the
session cookie the page got at sign-in (``alerts.api.routes_people``), and a
change made with the cookie (any method but GET and HEAD) must carry the
session's CSRF token in ``X-CSRF-Token``: another site's page can make the
browser send the cookie, but cannot read the token. A request with a key is
never taken as a session's, so needs no CSRF token.

A key is looked up by its SHA-256 hash and the answer kept for a few seconds
per API process, so a busy desk costs one lookup per key every few seconds; a
revoked key stops working within that time. Sessions are cached likewise, but
every process drops its cached sessions when any session ends (``NOTIFY
sessions_ended``), so an ended session stops working at once.

Links in CAP messages, alert details and feeds are absolute only when
``PATROLNET_PUBLIC_URL`` says where clients reach the API; without it they are
relative paths, never guessed from the request's Host header (which a client
or a misconfigured proxy chooses).

Example:
    >>> ApiSettings(report_max_bytes=1024).report_max_bytes
    1024
    >>> ApiSettings(public_url="https://alerts.example/").public_url
    'https://alerts.example'
    >>> ApiSettings(public_url="alerts.example")
    Traceback (most recent call last):
    ...
    ValueError: PATROLNET_PUBLIC_URL: 'alerts.example' is not an http(s)://host[:port][/path] URL
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, Header, HTTPException, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from alerts.auth import (
    CSRF_HEADER,
    LOOKUP_SQL,
    SESSION_COOKIE,
    Permission,
    Principal,
    csrf_ok,
    hash_key,
    principal_from_row,
)
from alerts.core.settings import optional_setting
from alerts.store.people import session_principal
from alerts.store.queries import AlertFilter, where
from alerts.store.rows import ALERT_COLUMNS, StoredAlert, row_to_alert


@dataclass(frozen=True)
class ApiSettings:
    """API settings; ``from_env`` reads ``PATROLNET_<NAME>`` (or ``PATROLNET_<NAME>_FILE``) for each."""

    public_url: str = ""  # where clients reach the API, for absolute links; unset: links are relative paths
    cap_sender: str = "patrolnet"
    report_max_bytes: int = 24_000_000  # a citizen report's photos together, as uploaded (a phone's are 2-6 MB)
    body_max_bytes: int = 65_536  # any other request body (JSON of the admin and desk routes)
    report_burst: float = 5.0  # reports a key may send at once ...
    report_per_hour: float = 12.0  # ... and the rate its allowance refills at
    node_stale_s: float = 90.0  # a node silent this long is shown unhealthy
    key_cache_s: float = 5.0  # API keys and sessions
    session_idle_s: float = 1800.0  # a session with no request this long ends (an open page polls every 15 s)
    session_max_s: float = 43_200.0  # and any session after this long (a shift): sign in again
    metrics_token: str = field(default="", repr=False)  # a scrape token besides operator/admin keys
    clip_dir: str = "/var/lib/patrolnet/clips"  # uploaded video clips (alerts.store.clips), shared by replicas
    clip_chunk_max_bytes: int = 1_048_576  # one upload request of a clip
    webhook_allow: str = ""  # hosts and networks webhooks may reach although not public (see alerts.notify.webhooks)
    timezone: str = "Asia/Shanghai"  # the sites' zone: the page shows times in it, the statistics' days are its days

    def __post_init__(self) -> None:
        parts = urlsplit(self.public_url)
        odd = parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
        if self.public_url and odd:
            raise ValueError(f"PATROLNET_PUBLIC_URL: {self.public_url!r} is not an http(s)://host[:port][/path] URL")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError) as exc:
            raise ValueError(f"PATROLNET_TIMEZONE: {self.timezone!r} is not a time zone, e.g. Asia/Shanghai") from exc

    @classmethod
    def from_env(cls) -> ApiSettings:
        # Each value is converted to its field's type as read from the field: Any says so to the checker.
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = optional_setting(f"PATROLNET_{f.name.upper()}")
            if value is not None:
                values[f.name] = type(f.default)(float(value)) if isinstance(f.default, int | float) else value
        return cls(**values)


class ErrorBody(BaseModel):
    """What every 4xx answer carries."""

    detail: str = Field(description="What was wrong, for a person.")
    errors: list[str] | None = Field(default=None, description="Each invalid parameter: where, and why.")


def refusal(description: str) -> dict:
    """A 4xx entry of a route's ``responses``: the description, and the ``ErrorBody`` every 4xx carries."""
    return {"model": ErrorBody, "description": description}


def get_pool(request: Request) -> AsyncConnectionPool:
    return request.app.state.pool


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


# The dependencies are coroutines: FastAPI runs a plain function dependency in a worker thread, two thread hand-offs
# per request for what is an attribute read.
async def _pool(request: Request) -> AsyncConnectionPool:
    return get_pool(request)


async def _settings(request: Request) -> ApiSettings:
    return get_settings(request)


Pool = Annotated[AsyncConnectionPool, Depends(_pool)]
Settings = Annotated[ApiSettings, Depends(_settings)]


def key_of(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key in these headers' values, if any.

    >>> key_of("Bearer k1 ", None), key_of("Basic k1", None), key_of("Bearer k1", "k2")
    ('k1', None, 'k2')
    """
    if x_api_key:
        return x_api_key
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


async def api_key(
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
    x_api_key: Annotated[str | None, Header(description="The API key, instead of Authorization")] = None,
) -> str | None:
    """The key a request carries, if any."""
    return key_of(authorization, x_api_key)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, {"WWW-Authenticate": "Bearer"})


async def _cached(
    request: Request,
    cache: dict[str, tuple[Principal | None, float]],
    secret: str,
    fetch: Callable[[AsyncConnection], Awaitable[Principal | None]],
) -> Principal | None:
    """Who ``secret`` (a key or a session token) names, from this process's ``cache`` (for ``key_cache_s``) or,
    on a miss, ``fetch`` on a pooled connection; a refusal is cached too."""
    hashed = hash_key(secret)
    hit = cache.get(hashed)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    async with get_pool(request).connection() as conn:
        found = await fetch(conn)
    if len(cache) > 10_000:  # secrets seen once (guesses) must not grow it without bound
        cache.clear()
    cache[hashed] = (found, time.monotonic() + get_settings(request).key_cache_s)
    return found


async def lookup(request: Request, key: str) -> Principal | None:
    """The principal of a key, from the per-process cache or the database."""

    async def fetch(conn: AsyncConnection) -> Principal | None:
        row = await (await conn.execute(LOOKUP_SQL, (hash_key(key),))).fetchone()
        return principal_from_row(row) if row else None

    return await _cached(request, request.app.state.key_cache, key, fetch)


async def session_lookup(request: Request, token: str, touch: bool = True) -> Principal | None:
    """The signed-in person of a session token, from the per-process cache or the database; ``touch``: a request
    of the person's, which keeps the session from idling out (a stream's checks do not)."""

    async def fetch(conn: AsyncConnection) -> Principal | None:
        return await session_principal(conn, token, get_settings(request).session_idle_s, touch)

    return await _cached(request, request.app.state.session_cache, token, fetch)


SAFE_METHODS = frozenset({"GET", "HEAD"})


async def identify(request: Request, key: str | None) -> Principal:
    """The caller: by its API key, else by its session cookie (with the CSRF token for a change); 401 or 403 if
    neither is good."""
    if key:
        found = await lookup(request, key)
        if found is None:
            raise _unauthorized("unknown or revoked API key")
        return found
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise _unauthorized("an API key is required: Authorization: Bearer <key>; or sign in")
    found = await session_lookup(request, token)
    if found is None:
        raise _unauthorized("the session has ended or expired: sign in again")
    if request.method not in SAFE_METHODS and not csrf_ok(token, request.headers.get(CSRF_HEADER)):
        raise HTTPException(403, f"a change made with a session needs the session's {CSRF_HEADER} header")
    return found


async def principal(request: Request, key: Annotated[str | None, Depends(api_key)]) -> Principal:
    return await identify(request, key)


Who = Annotated[Principal, Depends(principal)]


@dataclass(frozen=True)
class Require:
    """A dependency giving the caller, or 403 when its role lacks ``permission``; ``alerts.api.guard`` reads
    ``permission`` to refuse a request before its body is read."""

    permission: Permission

    async def __call__(self, who: Who) -> Principal:
        if not who.may(self.permission):
            raise HTTPException(403, f"role {who.role} may not use this route ({self.permission})")
        return who


def key_check(request: Request, key: str) -> Callable[[], Awaitable[bool]]:
    """A check whether ``key``, or when "" the request's session, still works (a key within the key cache time, a
    session at once): how a long stream notices a revoke or a sign-out."""
    token = request.cookies.get(SESSION_COOKIE, "")

    async def valid() -> bool:
        if key:
            return await lookup(request, key) is not None
        return await session_lookup(request, token, touch=False) is not None

    return valid


# The caller, as a route parameter type, or 403 when its role lacks the permission. Written out one by one:
# a type checker reads an alias only from a literal Annotated[...], not from a function that returns one.
Reader = Annotated[Principal, Depends(Require(Permission.ALERTS))]
Acknowledger = Annotated[Principal, Depends(Require(Permission.ACKNOWLEDGE))]
Actor = Annotated[Principal, Depends(Require(Permission.ACT))]
Admin = Annotated[Principal, Depends(Require(Permission.ADMIN))]
ReporterKey = Annotated[Principal, Depends(Require(Permission.REPORT))]
ClipUploader = Annotated[Principal, Depends(Require(Permission.CLIPS))]
SensorReader = Annotated[Principal, Depends(Require(Permission.READINGS))]
DeviceReader = Annotated[Principal, Depends(Require(Permission.DEVICES))]


async def visible_alert(pool: AsyncConnectionPool, alert_id: UUID, who: Principal) -> StoredAlert:
    """The alert if the caller may see it; 404 otherwise, so an id outside its scope reveals nothing."""
    clause, params = where(AlertFilter(), who)
    async with pool.connection() as conn:
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = %s AND {clause}"
        row = await (await conn.execute(sql, [alert_id, *params])).fetchone()
    if row is None:
        raise HTTPException(404, f"no alert {alert_id} that this key may see")
    return row_to_alert(row)


def base_url(request: Request) -> str:
    """The API's public address without a trailing slash, or "" (links are then relative paths)."""
    return get_settings(request).public_url
