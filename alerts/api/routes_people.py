"""People: signing in and out, one's own sessions, an admin's management of people, and assigning an alert.

A person signs in with ``POST /api/v1/session`` (login, password, and a TOTP code when they have one; an admin
always has one) and gets the ``__Host-patrolnet-session`` cookie (HttpOnly, Secure, SameSite=Strict, Path=/)
and the session's CSRF token, which the page sends as ``X-CSRF-Token`` with every change. Failed sign-ins are
throttled (``alerts.store.people``): 429 with ``Retry-After``. The queries are ``alerts.store.people``.
"""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from alerts.api.http import Actor, Admin, Pool, Settings, Who, refusal, visible_alert
from alerts.api.routes_admin import check_within
from alerts.auth import SESSION_COOKIE, Principal, csrf_token
from alerts.store import people
from alerts.store.alert_queries import assign
from alerts.store.people import (
    LOGIN_PATTERN,
    UNSCOPED,
    Language,
    Person,
    PersonChange,
    PersonIn,
    SessionInfo,
    SignInRefused,
)
from alerts.store.queries import PlaceFilter
from alerts.store.rows import StoredAlert

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["people"])


class SignIn(BaseModel):
    login: str = Field(pattern=LOGIN_PATTERN, description="The person's login.")
    password: str = Field(min_length=1, max_length=256, description="The password.")
    code: str = Field(default="", max_length=10, description="The TOTP code, when the person has TOTP.")


class SessionOut(BaseModel):
    person: Person = Field(description="Who is signed in.")
    session_id: UUID = Field(description="This session.")
    csrf_token: str = Field(description="Send as X-CSRF-Token with every change made with the session cookie.")


class NewPerson(BaseModel):
    person: Person = Field(description="The person added.")
    totp_uri: str | None = Field(description="otpauth:// URI for their authenticator app: shown once.")


class Password(BaseModel):
    password: str = Field(min_length=12, max_length=256, description="At least 12 characters; stored hashed.")


class TotpUri(BaseModel):
    totp_uri: str = Field(description="otpauth:// URI for the person's authenticator app: shown once.")


class Ended(BaseModel):
    ended: int = Field(description="How many sessions ended.")


class LanguageChoice(BaseModel):
    language: Language | None = Field(description="zh-CN or en; null: the browser's language.")


class Assignment(BaseModel):
    person_id: UUID | None = Field(description="The person to assign the alert to; null: to no one.")
    note: str = Field(default="", max_length=2000, description="Why, for the audit trail.")


async def signed_in(who: Who) -> Principal:
    """The caller, when a signed-in person (not a key)."""
    if who.person_id is None or who.session_id is None:
        raise HTTPException(400, "this route is for a signed-in person, not an API key")
    return who


Person_ = Annotated[Principal, Depends(signed_in)]


def person_principal(person: Person) -> Principal:
    """What a person may see, as a principal (their sessions' principal, without a session)."""
    scope = person.model_dump(include={"sub_district", "community", "grid", "site"})
    return Principal(name=person.name, role=person.role, person_id=person.id, **scope)


@router.post(
    "/session",
    summary="Sign in: sets the session cookie and returns the CSRF token",
    responses={401: refusal("wrong login, password or TOTP code"), 429: refusal("too many failed sign-ins")},
)
async def sign_in(request: Request, response: Response, pool: Pool, settings: Settings, body: SignIn) -> SessionOut:
    ip = request.client.host if request.client else ""
    async with pool.connection() as conn:
        wait = (await people.throttle(conn, body.login, ip)).wait_s()
        if wait > 0:
            after = f"{wait:.0f}"
            raise HTTPException(429, f"too many failed sign-ins: try again in {after} s", {"Retry-After": after})
        try:
            session = await people.sign_in(
                conn, body.login, body.password, body.code, ip, request.headers.get("user-agent", ""),
                settings.session_max_s,
            )  # fmt: skip
        except SignInRefused as exc:
            raise HTTPException(401, str(exc)) from exc
    response.set_cookie(
        SESSION_COOKIE, session.token, max_age=int(settings.session_max_s), path="/", secure=True, httponly=True,
        samesite="strict",
    )  # fmt: skip
    return SessionOut(person=session.person, session_id=session.session_id, csrf_token=csrf_token(session.token))


@router.get("/session", summary="Who is signed in, and the session's CSRF token (after a page reload)")
async def current_session(request: Request, pool: Pool, who: Person_) -> SessionOut:
    async with pool.connection() as conn:
        person = await people.find_person(conn, who, who.person_id)
    if person is None:  # moved out of their own scope by an admin since: the session's principal is gone too
        raise HTTPException(401, "the session has ended: sign in again")
    token = request.cookies.get(SESSION_COOKIE, "")
    assert who.session_id is not None  # signed_in says so
    return SessionOut(person=person, session_id=who.session_id, csrf_token=csrf_token(token))


def _dropped(request: Request) -> None:
    # This process at once; the others when NOTIFY sessions_ended reaches them.
    request.app.state.session_cache.clear()


@router.delete("/session", status_code=204, summary="Sign out: ends this session and clears the cookie")
async def sign_out(request: Request, response: Response, pool: Pool, who: Person_) -> None:
    assert who.person_id is not None
    async with pool.connection() as conn:
        await people.end_sessions(conn, who.person_id, "signed out", who.session_id)
    _dropped(request)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")


@router.put("/me/language", summary="My language on the page (zh-CN or en; null: the browser's)")
async def set_my_language(pool: Pool, who: Person_, body: LanguageChoice) -> Person:
    assert who.person_id is not None
    async with pool.connection() as conn:
        await people.set_language(conn, who.person_id, body.language)
        person = await people.find_person(conn, who, who.person_id)
    if person is None:
        raise HTTPException(401, "the session has ended: sign in again")
    return person


@router.get("/sessions", summary="My open sessions")
async def my_sessions(pool: Pool, who: Person_) -> list[SessionInfo]:
    assert who.person_id is not None
    async with pool.connection() as conn:
        return await people.list_sessions(conn, who.person_id)


@router.delete("/sessions/{session_id}", status_code=204, summary="End one of my sessions (e.g. a forgotten browser)")
async def end_my_session(request: Request, pool: Pool, session_id: UUID, who: Person_) -> None:
    assert who.person_id is not None
    async with pool.connection() as conn:
        if not await people.end_sessions(conn, who.person_id, "ended by its person", session_id):
            raise HTTPException(404, f"no open session {session_id} of yours")
    _dropped(request)


# Administration


async def _person(pool: Pool, who: Principal, person_id: UUID) -> Person:
    async with pool.connection() as conn:
        found = await people.find_person(conn, who, person_id)
    if found is None:
        raise HTTPException(404, f"no person {person_id} that this key administers")
    return found


@router.get("/people", summary="People within the admin's scope", responses={403: refusal("not an admin")})
async def list_people(pool: Pool, who: Admin, flt: Annotated[PlaceFilter, Query()]) -> list[Person]:
    async with pool.connection() as conn:
        return await people.list_people(conn, who, flt)


@router.post(
    "/people", status_code=201, summary="Add a person; an admin's TOTP URI is returned once",
    responses={409: refusal("the login is taken")},
)  # fmt: skip
async def add_person(pool: Pool, who: Admin, body: PersonIn) -> NewPerson:
    check_within(who, body)
    async with pool.connection() as conn:
        try:
            person, uri = await people.add_person(conn, body)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
    log.info("%s added %s %r", who.name, person.role, person.login)
    return NewPerson(person=person, totp_uri=uri)


@router.get("/people/{person_id}", summary="One person")
async def get_person(pool: Pool, person_id: UUID, who: Admin) -> Person:
    return await _person(pool, who, person_id)


@router.patch("/people/{person_id}", summary="Change a person; disabling them or a new role ends their sessions")
async def change_person(request: Request, pool: Pool, person_id: UUID, who: Admin, body: PersonChange) -> Person:
    current = await _person(pool, who, person_id)
    # An admin may not move someone out of their own scope.
    check_within(who, current.model_copy(update=body.model_dump(include=body.model_fields_set - {"disabled"})))
    async with pool.connection() as conn:
        try:
            changed = await people.change_person(conn, person_id, body)
        except ValidationError as exc:
            raise HTTPException(422, "; ".join(e["msg"] for e in exc.errors())) from exc
    if body.disabled or body.role is not None:
        _dropped(request)
    log.info("%s changed %r: %s", who.name, changed.login, ", ".join(sorted(body.model_fields_set)))
    return changed


@router.post("/people/{person_id}/password", status_code=204, summary="Set a password; their sessions end")
async def set_password(request: Request, pool: Pool, person_id: UUID, who: Admin, body: Password) -> None:
    await _person(pool, who, person_id)
    async with pool.connection() as conn:
        await people.set_password(conn, person_id, body.password)
    _dropped(request)


@router.post("/people/{person_id}/totp", summary="A new TOTP secret; returns its URI once")
async def reset_totp(pool: Pool, person_id: UUID, who: Admin) -> TotpUri:
    person = await _person(pool, who, person_id)
    async with pool.connection() as conn:
        return TotpUri(totp_uri=await people.reset_totp(conn, person_id, person.login))


@router.get("/people/{person_id}/sessions", summary="A person's open sessions")
async def person_sessions(pool: Pool, person_id: UUID, who: Admin) -> list[SessionInfo]:
    await _person(pool, who, person_id)
    async with pool.connection() as conn:
        return await people.list_sessions(conn, person_id)


@router.delete("/people/{person_id}/sessions", summary="End all of a person's sessions")
async def end_person_sessions(request: Request, pool: Pool, person_id: UUID, who: Admin) -> Ended:
    await _person(pool, who, person_id)
    async with pool.connection() as conn:
        ended = await people.end_sessions(conn, person_id, f"ended by {who.name}")
    _dropped(request)
    return Ended(ended=ended)


@router.put(
    "/alerts/{alert_id}/assignee",
    summary="Assign an alert to a person who may see it, or to no one",
    responses={422: refusal("the person is disabled or may not see the alert")},
)
async def assign_alert(pool: Pool, alert_id: UUID, who: Actor, body: Assignment) -> StoredAlert:
    await visible_alert(pool, alert_id, who)
    assignee = None
    if body.person_id is not None:
        async with pool.connection() as conn:
            # Anyone, wherever their scope: whether they may see the alert is what counts, checked below.
            person = await people.find_person(conn, UNSCOPED, body.person_id)
        if person is None or person.disabled:
            raise HTTPException(422, f"no enabled person {body.person_id}")
        try:
            await visible_alert(pool, alert_id, person_principal(person))
        except HTTPException as exc:
            raise HTTPException(422, f"{person.name} may not see this alert") from exc
        assignee = (person.name, person.id)
    updated = await assign(pool, alert_id, assignee, who, body.note)
    if updated is None:
        raise HTTPException(404, f"no alert {alert_id}")
    log.info("%s assigned %s to %s", who.name, alert_id, assignee[0] if assignee else "no one")
    return updated
