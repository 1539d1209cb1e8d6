"""Shops and their weekly duty rotation: registering and editing shops, swapping weeks, the duty shop this week
and next, the reminder, and the shops' check-ins from their phones.

The community officer (a police person or key scoped to the community or wider, not to a grid or site) or an
admin registers and edits shops, opts them out and swaps weeks, within its places; anyone who reads alerts reads
the shops and the duty of its community. A shop gets a key when it is registered (shown once, as a citizen
reporter's is) for its phone, which posts its check-ins with it: the time of the patrol, a note and a photo
(multipart; the photo decoded and written again as citizen reports' are, ``alerts.api.media.clean_photo``: no
EXIF, no GPS, at most 1600 px; the upload capped at ``PATROLNET_REPORT_MAX_BYTES``), and reads its own page
(``GET /api/v1/shops/me``: the shop, its duty, its check-ins), from the phone page ``/shop#<key>``
(``alerts.api.shop_page``). A shop that lost its link gets a new key from the officer, the old one revoked. The
rule of the rotation is ``alerts.store.shops``; the reminder ``alerts.notify.reminders``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from alerts.api.http import Pool, Reader, ReporterKey, Settings, Who, base_url, refusal
from alerts.api.media import clean_photo
from alerts.api.report_links import qr_svg
from alerts.api.routes_admin import check_within
from alerts.api.shop_page import shop_url
from alerts.auth import Principal
from alerts.core.models import Role
from alerts.notify.reminders import Reminder, ReminderSender, remind_all
from alerts.notify.webhooks import TargetPolicy
from alerts.store import shops
from alerts.store.people import UNSCOPED
from alerts.store.shops import MAX_WEEKS, CheckIn, DutyWeek, NotFound, Shop, ShopChange, ShopIn, SwapIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/shops", tags=["shops"])

CHECKIN_PAST = timedelta(days=8)  # a patrol checked in late, from a phone that was offline
CHECKIN_AHEAD = timedelta(minutes=10)  # a phone's clock a little fast
MY_CHECKINS = 20  # the newest check-ins a shop's page lists


async def _officer(who: Who) -> Principal:
    if who.role is Role.ADMIN or (who.role is Role.POLICE and who.grid is None and who.site is None):
        return who
    raise HTTPException(403, "shops are managed by the community's police officer or an admin")


Officer = Annotated[Principal, Depends(_officer)]


class NewShop(BaseModel):
    shop: Shop = Field(description="The registered shop.")
    key: str = Field(description="The key of the shop's phone, for its check-ins: shown once, stored hashed.")
    url: str = Field(description="The shop's phone page with its key (absolute when PATROLNET_PUBLIC_URL is set).")
    qr_svg: str | None = Field(description="The URL's QR code as SVG, when the URL is absolute and segno installed.")


def _new_shop(request: Request, shop: Shop, key: str) -> NewShop:
    url = shop_url(base_url(request), key)
    return NewShop(shop=shop, key=key, url=url, qr_svg=qr_svg(url))


class MyShop(BaseModel):
    shop: Shop = Field(description="The shop whose key calls.")
    this_week: DutyWeek = Field(description="This week and its shop on duty.")
    next_week: DutyWeek = Field(description="Next week and its shop on duty.")
    my_weeks: list[date] = Field(description=f"The weeks (Mondays) the shop is on duty, this one and the next "
                                 f"{MAX_WEEKS - 1}.")  # fmt: skip
    checkins: list[CheckIn] = Field(description=f"Its newest {MY_CHECKINS} check-ins, newest first.")


class RemindIn(BaseModel):
    community: str = Field(min_length=1, max_length=100, description="Remind this community's shop on duty.")


class ReminderSent(BaseModel):
    week: date = Field(description="The week's Monday.")
    shop: Shop = Field(description="The shop on duty.")
    webhook_id: UUID = Field(description="The community's webhook or robot it went to.")
    format: str = Field(description="json, wecom, dingtalk or feishu.")
    status: int | None = Field(description="The receiver's HTTP status.")
    error: str | None = Field(description="Why it failed; null when it was taken.")


def _not_found(exc: NotFound) -> HTTPException:
    return HTTPException(404, str(exc))


async def _shop(pool: Pool, who: Principal, shop_id: UUID) -> Shop:
    async with pool.connection() as conn:
        try:
            return await shops.get_shop(conn, who, shop_id)
        except NotFound as exc:
            raise _not_found(exc) from None


@router.get("", summary="The shops of the caller's places, by community and rotation order")
async def list_shops(
    pool: Pool, who: Reader, community: Annotated[str | None, Query(max_length=100)] = None
) -> list[Shop]:
    async with pool.connection() as conn:
        return await shops.list_shops(conn, who, community)


@router.post("", status_code=201, summary="Register a shop at the end of its community's rotation; its key once")
async def register(request: Request, pool: Pool, who: Officer, body: ShopIn) -> NewShop:
    check_within(who, body)
    async with pool.connection() as conn:
        try:
            shop, key = await shops.register(conn, body)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    log.info("%s registered shop %r in %s (position %d)", who.name, shop.name, shop.community, shop.position)
    return _new_shop(request, shop, key)


async def _caller_shop(conn: AsyncConnection, who: Principal) -> Shop:
    shop = await shops.shop_of_key(conn, who.key_id)
    if shop is None:
        raise HTTPException(403, "this key is not a shop's: the community officer registers shops")
    return shop


@router.get("/me", summary="The calling shop's phone page: the shop, this week's and next week's duty, its check-ins")
async def me(pool: Pool, who: ReporterKey) -> MyShop:
    async with pool.connection() as conn:
        shop = await _caller_shop(conn, who)
        weeks = await shops.duty(conn, UNSCOPED, shop.community, shops.this_week(), MAX_WEEKS)
        recent = await shops.checkins(conn, shop.id, MY_CHECKINS)
    mine = [w.week for w in weeks if w.shop is not None and w.shop.id == shop.id]
    return MyShop(shop=shop, this_week=weeks[0], next_week=weeks[1], my_weeks=mine, checkins=recent)


@router.get("/duty", summary="The shop on duty this week and the next (or from a given week, for some weeks)")
async def duty(
    pool: Pool,
    who: Reader,
    community: Annotated[str, Query(min_length=1, max_length=100)],
    week: Annotated[date | None, Query(description="From this week (any day of it); default this week.")] = None,
    weeks: Annotated[int, Query(ge=1, le=MAX_WEEKS)] = 2,
) -> list[DutyWeek]:
    first = shops.this_week() if week is None else week - timedelta(days=week.weekday())
    async with pool.connection() as conn:
        try:
            return await shops.duty(conn, who, community, first, weeks)
        except NotFound as exc:
            raise _not_found(exc) from None
        except ValueError as exc:
            raise HTTPException(422, f"week: {exc}") from None


@router.post("/swaps", summary="Give a week to a shop; the shop displaced takes that shop's nearest week")
async def swap(pool: Pool, who: Officer, body: SwapIn) -> list[DutyWeek]:
    async with pool.connection() as conn:
        try:
            await shops.check_community(conn, who, body.community)
            changed = await shops.swap(conn, body, who.name)
        except NotFound as exc:
            raise _not_found(exc) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    log.info("%s swapped shop duty in %s: %s", who.name, body.community, [(w.week, w.shop and w.shop.name)
                                                                          for w in changed])  # fmt: skip
    return changed


@router.post("/remind", summary="Remind this week's shop on duty, through the community's webhooks and robots")
async def remind(pool: Pool, settings: Settings, who: Officer, body: RemindIn) -> list[ReminderSent]:
    async with pool.connection() as conn:
        try:
            this, following = await shops.duty(conn, who, body.community, shops.this_week(), 2)
        except NotFound as exc:
            raise _not_found(exc) from None
    if this.shop is None:
        raise HTTPException(409, f"no shop takes turns in community {body.community!r}")
    sender = ReminderSender(TargetPolicy.parse(settings.webhook_allow), settings.public_url)
    reminder = Reminder(week=this.week, shop=this.shop, next=following.shop)
    assert isinstance(pool.conninfo, str), "create_app gives the pool its database URL"
    sent = await asyncio.to_thread(remind_all, pool.conninfo, sender, [reminder])
    return [ReminderSent(week=this.week, shop=this.shop, webhook_id=s.webhook_id, format=s.format, status=s.status,
                         error=s.error) for s in sent]  # fmt: skip


@router.post(
    "/checkins",
    status_code=201,
    summary="A shop's phone checks in a patrol: its time, a note and an optional photo (multipart)",
    responses={413: refusal("photo too large"), 415: refusal("photo not a JPEG, PNG or WebP picture")},
)
async def check_in(
    pool: Pool,
    settings: Settings,
    who: ReporterKey,
    at: Annotated[datetime | None, Form(description="When it patrolled (ISO 8601 with offset); default now.")] = None,
    note: Annotated[str, Form(max_length=2000, description="What it saw.")] = "",
    photo: Annotated[
        UploadFile | None, File(description="A JPEG, PNG or WebP picture; kept as a JPEG without metadata.")
    ] = None,
) -> CheckIn:
    now = datetime.now(UTC)
    at = at or now
    if at.tzinfo is None or not now - CHECKIN_PAST <= at <= now + CHECKIN_AHEAD:
        raise HTTPException(422, f"at: a time with its offset, within the last {CHECKIN_PAST.days} days")
    async with pool.connection() as conn:
        shop = await _caller_shop(conn, who)  # before decoding anything: only a shop's photos cost the CPU
    picture = None
    if photo is not None:
        data = await photo.read(settings.report_max_bytes + 1)
        if len(data) > settings.report_max_bytes:
            raise HTTPException(413, f"photo: larger than {settings.report_max_bytes} bytes")
        try:
            picture = (await asyncio.to_thread(clean_photo, data), "image/jpeg")  # decoding is the CPU's
        except ValueError as exc:
            raise HTTPException(415, f"photo: {exc}") from exc
    async with pool.connection() as conn:
        return await shops.add_checkin(conn, shop, who.key_id or shop.id, at, note.strip(), picture)


@router.get("/checkins/{checkin_id}/photo", summary="A check-in's photo", response_class=Response)
async def checkin_photo(pool: Pool, who: Reader, checkin_id: UUID) -> Response:
    async with pool.connection() as conn:
        try:
            data, mime = await shops.checkin_photo(conn, who, checkin_id)
        except NotFound as exc:
            raise _not_found(exc) from None
    return Response(data, media_type=mime)


@router.get("/{shop_id}", summary="One shop")
async def get_shop(pool: Pool, who: Reader, shop_id: UUID) -> Shop:
    return await _shop(pool, who, shop_id)


@router.patch("/{shop_id}", summary="Change a shop; opted_out passes it over in the rotation (or takes it back)")
async def change_shop(pool: Pool, who: Officer, shop_id: UUID, body: ShopChange) -> Shop:
    shop = await _shop(pool, who, shop_id)
    async with pool.connection() as conn:
        try:
            changed = await shops.change(conn, shop, body)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    log.info("%s changed shop %s: %s", who.name, shop_id, body.model_dump(exclude_unset=True))
    return changed


@router.post("/{shop_id}/key", summary="A new key and link for the shop's phone (once); its old key stops working")
async def new_key(request: Request, pool: Pool, who: Officer, shop_id: UUID) -> NewShop:
    shop = await _shop(pool, who, shop_id)
    async with pool.connection() as conn:
        try:
            key = await shops.new_key_for(conn, shop)
        except NotFound as exc:
            raise _not_found(exc) from None
    log.info("%s gave shop %s a new key; the old one is revoked", who.name, shop_id)
    return _new_shop(request, shop, key)


@router.get("/{shop_id}/checkins", summary="A shop's check-ins, newest first")
async def list_checkins(
    pool: Pool, who: Reader, shop_id: UUID, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[CheckIn]:
    await _shop(pool, who, shop_id)
    async with pool.connection() as conn:
        return await shops.checkins(conn, shop_id, limit)
