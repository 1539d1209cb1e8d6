"""People and their sessions: who staffs the desks, their sign-ins, and the throttle on failed ones.

Every function takes an async connection (the API's pool gives one; the CLI opens one), so the API and the
``patrolnet person`` commands run the same statements. Ending sessions sends ``NOTIFY sessions_ended``: every API
process drops its cached sessions and wakes its streams, and a stream of an ended session closes at once.

A password is hashed in a worker thread (argon2id takes tens of milliseconds on purpose). Failed sign-ins are
throttled by login and address together (``FREE_FAILURES`` free, then a doubling wait) and by address alone (a
cap per window): a stranger guessing a person's password from elsewhere slows only themselves, and the person
signs in from their own desk.

Example:
    >>> Throttle(failures=6, address_failures=6, last_failure_age_s=1.0).wait_s()
    3.0
    >>> Throttle(failures=2, address_failures=500, last_failure_age_s=1.0).wait_s() == WINDOW_S - 1.0
    True
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple
from uuid import UUID, uuid4

from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alerts.auth import (
    PERSON_ROLES,
    TOTP_ROLES,
    Principal,
    check_password,
    hash_key,
    hash_password,
    new_session_token,
    new_totp_secret,
    password_needs_rehash,
    totp_step,
    totp_uri,
)
from alerts.core.models import Role
from alerts.store.queries import PlaceFilter, scoped_where

log = logging.getLogger(__name__)

SESSIONS_CHANNEL = "sessions_ended"
FREE_FAILURES = 5  # failed sign-ins of one login from one address before each next try waits
MAX_BACKOFF_S = 300.0
ADDRESS_CAP = 30  # failed sign-ins from one address, any logins, within the window
WINDOW_S = 900.0
LOGIN_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Language = Literal["zh-CN", "en"]
"""The page's languages (alerts.notify.wording has their words)."""
UNSCOPED = Principal(name="patrolnet", role=Role.ADMIN)
"""A caller whose scope covers every person: the CLI, and finding an assignee (who is then checked)."""


class PersonFields(BaseModel):
    """What an admin says about a person, besides the login and password."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Full name, as the audit trail shows it.")
    phone: str = Field(default="", max_length=40, description="How the desk reaches them.")
    role: Role = Field(
        description="What they see and may do: police, fire, operator, admin, grid_worker, city_management or "
        "traffic_police."
    )
    sub_district: str | None = Field(default=None, max_length=200, description="Only this sub-district, if set.")
    community: str | None = Field(default=None, max_length=200, description="Only this community, if set.")
    grid: str | None = Field(default=None, max_length=200, description="Only this grid cell, if set.")
    site: str | None = Field(default=None, max_length=200, description="Only this site, if set.")
    on_duty: bool = Field(default=False, description="Whether they are on duty now.")

    @model_validator(mode="after")
    def _person_role(self) -> PersonFields:
        if self.role not in PERSON_ROLES:
            raise ValueError(f"role {self.role} is for machines (API keys), not people")
        if self.role is Role.GRID_WORKER and self.grid is None:
            raise ValueError("a grid worker's scope names their grid")
        return self


class PersonIn(PersonFields):
    login: str = Field(pattern=LOGIN_PATTERN, description="What they sign in with: lower-case letters, digits, ._-")
    password: str = Field(min_length=12, max_length=256, description="At least 12 characters; stored hashed.")
    totp: bool = Field(default=False, description="Sign in with a TOTP code too (always for an admin).")


class Person(PersonFields):
    id: UUID = Field(description="The person's id.")
    login: str = Field(description="What they sign in with.")
    totp: bool = Field(description="Whether they sign in with a TOTP code too.")
    disabled: bool = Field(description="A disabled person cannot sign in; their sessions ended when disabled.")
    created_at: datetime = Field(description="When they were added.")
    language: Language | None = Field(default=None, description="The page's language; null: the browser's.")


class PersonChange(BaseModel):
    """The fields to change; those left out stay (a scope level sent as null widens the scope)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, description="Full name.")
    phone: str | None = Field(default=None, max_length=40, description="Phone.")
    role: Role | None = Field(default=None, description="Role.")
    sub_district: str | None = Field(default=None, max_length=200, description="Sub-district scope.")
    community: str | None = Field(default=None, max_length=200, description="Community scope.")
    grid: str | None = Field(default=None, max_length=200, description="Grid scope.")
    site: str | None = Field(default=None, max_length=200, description="Site scope.")
    on_duty: bool | None = Field(default=None, description="On duty now.")
    disabled: bool | None = Field(default=None, description="true: no sign-in, and their sessions end at once.")


class SessionInfo(BaseModel):
    id: UUID = Field(description="The session's id.")
    created_at: datetime = Field(description="Signed in at.")
    last_seen: datetime = Field(description="Its newest request.")
    expires_at: datetime = Field(description="When it ends at the latest.")
    ip: str = Field(description="The address it signed in from.")
    user_agent: str = Field(description="The browser it signed in with.")


class NewSession(NamedTuple):
    token: str
    session_id: UUID
    expires_at: datetime
    person: Person


_PERSON = (
    "p.id, p.name, p.phone, p.role, p.sub_district, p.community, p.grid, p.site, p.on_duty, p.login,"
    " p.totp_secret IS NOT NULL, p.disabled_at IS NOT NULL, p.created_at, p.language"
)


def _person(row: tuple) -> Person:
    id_, name, phone, role, sub_district, community, grid, site, on_duty, login, totp, disabled, created, language = row
    return Person.model_construct(
        id=id_, name=name, phone=phone, role=Role(role), sub_district=sub_district, community=community, grid=grid,
        site=site, on_duty=on_duty, login=login, totp=totp, disabled=disabled, created_at=created, language=language,
    )  # fmt: skip


async def add_person(conn: AsyncConnection, person: PersonIn) -> tuple[Person, str | None]:
    """Stores a person; returns them and, when they sign in with TOTP, the otpauth:// URI (shown once).
    ValueError when the login is taken."""
    secret = new_totp_secret() if person.totp or person.role in TOTP_ROLES else None
    hashed = await asyncio.to_thread(hash_password, person.password)
    p = person
    row = await (
        await conn.execute(
            "INSERT INTO people AS p (id, name, login, phone, role, sub_district, community, grid, site, on_duty,"
            " password_hash, totp_secret) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" ON CONFLICT (login) DO NOTHING RETURNING {_PERSON}",
            (
                uuid4(),
                p.name,
                p.login,
                p.phone,
                p.role,
                p.sub_district,
                p.community,
                p.grid,
                p.site,
                p.on_duty,
                hashed,
                secret,
            ),
        )
    ).fetchone()
    if row is None:
        raise ValueError(f"login {person.login!r} is taken")
    log.info("added %s %r (%s)", person.role, person.login, person.name)
    return _person(row), totp_uri(secret, person.login) if secret else None


async def list_people(conn: AsyncConnection, who: Principal, flt: PlaceFilter | None = None) -> list[Person]:
    """The people within the caller's scope (and the filter's places), by name."""
    clause, params = scoped_where(who, flt, "p")
    rows = await (
        await conn.execute(f"SELECT {_PERSON} FROM people p WHERE {clause} ORDER BY p.name", params)
    ).fetchall()
    return [_person(r) for r in rows]


async def find_person(
    conn: AsyncConnection, who: Principal, person_id: UUID | None = None, login: str = ""
) -> Person | None:
    """One person within the caller's scope, by id or login."""
    clause, params = scoped_where(who, None, "p")
    by, value = ("p.id", person_id) if person_id is not None else ("p.login", login)
    sql = f"SELECT {_PERSON} FROM people p WHERE {by} = %s AND {clause}"
    row = await (await conn.execute(sql, [value, *params])).fetchone()
    return _person(row) if row else None


async def change_person(conn: AsyncConnection, person_id: UUID, change: PersonChange) -> Person:
    """Applies the fields sent; disabling, or a role sent, ends the person's sessions at once."""
    values: dict[str, Any] = {f: getattr(change, f) for f in change.model_fields_set if f != "disabled"}
    sets = [f"{column} = %s" for column in values]  # column names are PersonChange's fields, never the caller's text
    if change.disabled is not None:
        sets.append("disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END")
        values["disabled"] = change.disabled
    async with conn.transaction():
        if sets:
            await conn.execute(f"UPDATE people SET {', '.join(sets)} WHERE id = %s", [*values.values(), person_id])
        row = await (await conn.execute(f"SELECT {_PERSON} FROM people p WHERE p.id = %s", (person_id,))).fetchone()
        if row is None:
            raise LookupError(f"no person {person_id}")
        person = _person(row)
        PersonFields.model_validate(person.model_dump(include=set(PersonFields.model_fields)))
        if change.disabled:
            await end_sessions(conn, person_id, "disabled")
        elif change.role is not None:  # a new role signs in afresh: an admin's with a TOTP code
            await end_sessions(conn, person_id, "role changed")
    return person


async def set_language(conn: AsyncConnection, person_id: UUID, language: Language | None) -> None:
    """A person's page language (None: the browser's)."""
    await conn.execute("UPDATE people SET language = %s WHERE id = %s", (language, person_id))


async def set_password(conn: AsyncConnection, person_id: UUID, password: str) -> None:
    """A new password; the person's sessions end (whoever knew the old one is signed out)."""
    hashed = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        await conn.execute("UPDATE people SET password_hash = %s WHERE id = %s", (hashed, person_id))
        await end_sessions(conn, person_id, "password changed")


async def reset_totp(conn: AsyncConnection, person_id: UUID, login: str) -> str:
    """A new TOTP secret (the old codes stop working); returns its otpauth:// URI, shown once."""
    secret = new_totp_secret()
    await conn.execute("UPDATE people SET totp_secret = %s, totp_last_step = 0 WHERE id = %s", (secret, person_id))
    return totp_uri(secret, login)


# Sessions


async def end_sessions(conn: AsyncConnection, person_id: UUID, reason: str, session_id: UUID | None = None) -> int:
    """Ends a person's open sessions (or only ``session_id``); returns how many. Every API process hears of it."""
    sql = "UPDATE sessions SET ended_at = now(), end_reason = %s WHERE person_id = %s AND ended_at IS NULL"
    params: list[Any] = [reason, person_id]
    if session_id is not None:
        sql += " AND id = %s"
        params.append(session_id)
    ended = (await conn.execute(sql, params)).rowcount
    if ended:
        await conn.execute(f"NOTIFY {SESSIONS_CHANNEL}")
        log.info("ended %d session(s) of person %s: %s", ended, person_id, reason)
    return ended


async def list_sessions(conn: AsyncConnection, person_id: UUID) -> list[SessionInfo]:
    """A person's open sessions, newest first."""
    rows = await (
        await conn.execute(
            "SELECT id, created_at, last_seen, expires_at, ip, user_agent FROM sessions"
            " WHERE person_id = %s AND ended_at IS NULL AND expires_at > now() ORDER BY created_at DESC",
            (person_id,),
        )
    ).fetchall()
    return [SessionInfo(**dict(zip(SessionInfo.model_fields, r, strict=True))) for r in rows]


_SESSION_SQL = """
SELECT p.name, p.role, p.sub_district, p.community, p.grid, p.site, p.id, s.id,
       s.last_seen < now() - make_interval(secs => %s)
FROM sessions s JOIN people p ON p.id = s.person_id
WHERE s.token_hash = %s AND s.ended_at IS NULL AND s.expires_at > now()
  AND s.last_seen > now() - make_interval(secs => %s) AND p.disabled_at IS NULL"""
TOUCH_AFTER_S = 30.0  # a session's last_seen is written at most this often: one write per desk, not per request


async def session_principal(conn: AsyncConnection, token: str, idle_s: float, touch: bool) -> Principal | None:
    """The signed-in person of a session token, if the session is open, not idle too long and not expired; a
    request (``touch``) marks it used."""
    row = await (await conn.execute(_SESSION_SQL, (TOUCH_AFTER_S, hash_key(token), idle_s))).fetchone()
    if row is None:
        return None
    *fields, person_id, session_id, stale = row
    if touch and stale:
        await conn.execute("UPDATE sessions SET last_seen = now() WHERE id = %s", (session_id,))
    name, role, sub_district, community, grid, site = fields
    return Principal(
        name=name, role=role, sub_district=sub_district, community=community, grid=grid, site=site,
        person_id=person_id, session_id=session_id,
    )  # fmt: skip


# Signing in


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins within the window: of this login from this address, of any login from this address."""

    failures: int
    address_failures: int
    last_failure_age_s: float

    def wait_s(self) -> float:
        """How long the next try must wait; 0: go ahead."""
        if self.address_failures >= ADDRESS_CAP:
            return max(WINDOW_S - self.last_failure_age_s, 1.0)
        if self.failures < FREE_FAILURES:
            return 0.0
        backoff = min(2.0 ** (self.failures - FREE_FAILURES + 1), MAX_BACKOFF_S)
        return max(backoff - self.last_failure_age_s, 0.0)


async def throttle(conn: AsyncConnection, login: str, ip: str) -> Throttle:
    row = await (
        await conn.execute(
            "SELECT count(*) FILTER (WHERE login = %s), count(*), extract(epoch FROM now() - max(at))"
            " FROM sign_in_failures WHERE ip = %s AND at > now() - make_interval(secs => %s)",
            (login, ip, WINDOW_S),
        )
    ).fetchone()
    failures, address_failures, age = row if row else (0, 0, None)
    return Throttle(failures, address_failures, float(age) if age is not None else WINDOW_S)


class SignInRefused(Exception):
    """Why a sign-in failed, for the person (never which of login, password or code was wrong)."""


_CREDENTIALS_SQL = """
SELECT id, password_hash, totp_secret, totp_last_step, role FROM people WHERE login = %s AND disabled_at IS NULL"""


async def sign_in(
    conn: AsyncConnection, login: str, password: str, code: str, ip: str, user_agent: str, lifetime_s: float
) -> NewSession:
    """Checks the credentials and opens a session; SignInRefused (and a failure recorded) when they are wrong."""
    row = await (await conn.execute(_CREDENTIALS_SQL, (login,))).fetchone()
    person_id, hashed, secret, last_step, role = row or (None, None, None, 0, None)
    good = await asyncio.to_thread(check_password, hashed, password)
    step = totp_step(secret, code, last_step) if good and secret else None
    if not good or (secret and step is None) or (role in TOTP_ROLES and not secret):
        await conn.execute("INSERT INTO sign_in_failures (login, ip) VALUES (%s, %s)", (login, ip))
        log.info("failed sign-in of %r from %s", login, ip)
        if good and role in TOTP_ROLES and not secret:
            raise SignInRefused("an admin signs in with a TOTP code: an admin must set one up (patrolnet person totp)")
        raise SignInRefused("wrong login, password or TOTP code")
    assert hashed is not None and person_id is not None  # a good password has a stored hash
    token, session_id = new_session_token(), uuid4()
    async with conn.transaction():
        if step is not None:
            await conn.execute("UPDATE people SET totp_last_step = %s WHERE id = %s", (step, person_id))
        if password_needs_rehash(hashed):
            await conn.execute(
                "UPDATE people SET password_hash = %s WHERE id = %s",
                (await asyncio.to_thread(hash_password, password), person_id),
            )
        await conn.execute("DELETE FROM sign_in_failures WHERE login = %s AND ip = %s", (login, ip))
        expires = await (
            await conn.execute(
                "INSERT INTO sessions (id, token_hash, person_id, expires_at, ip, user_agent)"
                " VALUES (%s, %s, %s, now() + make_interval(secs => %s), %s, %s) RETURNING expires_at",
                (session_id, hash_key(token), person_id, lifetime_s, ip, user_agent[:300]),
            )
        ).fetchone()
        person = await (await conn.execute(f"SELECT {_PERSON} FROM people p WHERE p.id = %s", (person_id,))).fetchone()
    assert expires is not None and person is not None  # both rows were just written
    log.info("%r signed in from %s", login, ip)
    return NewSession(token, session_id, expires[0], _person(person))
