"""Citizen reports: a registered reporter posts a category, text, where within their site and up to four photos;
the desk the category belongs to gets an alert, replies to it, and the reporter reads back what became of it.

A report is an Event like any other: the alert policy turns it into its alert, and both are written on the API's
connection pool with the store's statements (``write_alert``), its change logged for the streams and webhooks like
every alert change. Its category says its kind and so its desk (``CATEGORIES``): the security ones go to the
grid's police as reports, a fire hazard to the fire desk, stalls, parking and building to city management.

Every photo is decoded and written again (``alerts.api.media.clean_photo``: no EXIF, no GPS, at most 1600 px and
600 kB); the first is the event's snapshot (so the snapshot route, CAP and the chat robots carry it), the others
are kept beside it, and ``/api/v1/events/{id}/photos/{n}`` serves each under the snapshot's rules. Together the
uploads may be ``PATROLNET_REPORT_MAX_BYTES`` long. Each reporter key has a token bucket kept in the database, not
in the API process: with N API replicas behind a balancer a per-process bucket would let a key through N times as
often, and the bucket row's lock makes concurrent reports from one key take their tokens one after the other. A
reporter's phone link (``alerts.api.report_links``) speaks as its key, so the two share one allowance.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Annotated, NamedTuple
from uuid import UUID, uuid4

from fastapi import APIRouter, File, Form, HTTPException, Path, UploadFile
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from alerts.api.http import Actor, Pool, Reader, ReporterKey, Settings, refusal, visible_alert
from alerts.api.media import clean_photo, image_type
from alerts.core.models import Alert, Event, EventKind, Place, Role, Severity
from alerts.core.policy import AlertPolicy
from alerts.store import history, phone_reports
from alerts.store.database import write_alert
from alerts.store.phone_reports import OwnReport, Reply

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["citizen reports"])

MAX_PHOTOS = 4


class Category(NamedTuple):
    kind: EventKind
    type: str
    severity: Severity
    zh: str
    en: str


_POLICE, _FIRE, _CITY = EventKind.REPORT, EventKind.FIRE, EventKind.ENFORCEMENT
CATEGORIES: dict[str, Category] = {
    "suspicious_person": Category(_POLICE, "suspicious_person", Severity.MAJOR, "可疑人员", "Suspicious person"),
    "unlocked_ebike": Category(_POLICE, "unlocked_ebike", Severity.MINOR, "电动车未上锁", "Unlocked e-bike"),
    "counterfeit_money": Category(_POLICE, "counterfeit_money", Severity.MAJOR, "假币", "Counterfeit money"),
    "fire_hazard": Category(_FIRE, "fire_hazard", Severity.MINOR, "消防隐患", "Fire hazard"),
    "road_stall": Category(_CITY, "road_stall", Severity.MINOR, "占道经营", "Road-occupying stall"),
    "illegal_parking": Category(_CITY, "illegal_parking", Severity.MINOR, "违章停车", "Illegal parking"),
    "illegal_building": Category(_CITY, "illegal_building", Severity.MINOR, "违章建筑", "Illegal building"),
    "other": Category(_POLICE, "citizen_report", Severity.MAJOR, "其他", "Other"),
}
"""What a reporter may report: the alert's kind (so its desk), type and severity, and its words."""

# One token per report; the bucket refills at `rate` tokens a second up to `burst`.
TAKE_TOKEN_SQL = """
INSERT INTO rate_buckets AS b (key, tokens, at) VALUES (%(key)s, %(burst)s - 1, now())
ON CONFLICT (key) DO UPDATE SET
    tokens = least(%(burst)s, b.tokens + extract(epoch FROM now() - b.at) * %(rate)s) - 1, at = now()
WHERE least(%(burst)s, b.tokens + extract(epoch FROM now() - b.at) * %(rate)s) >= 1
RETURNING tokens"""


_REPORTER_SQL = "SELECT id, name, contact, sub_district, community, grid, site FROM reporters WHERE key_id = %s"


class Reporter(NamedTuple):
    id: UUID
    name: str
    contact: str
    place: Place


class ReportReceipt(BaseModel):
    alert_id: UUID = Field(description="The alert the desk received.")
    event_id: UUID = Field(description="The report as an event.")
    photo: bool = Field(description="Whether a photo came with it.")
    photos: int = Field(description="How many photos came with it.")
    kind: EventKind = Field(description="The alert's kind: report (police), fire, or enforcement.")
    route: Role = Field(description="The desk it went to.")


class CategoryOut(BaseModel):
    id: str = Field(description="What to send as category.")
    zh: str = Field(description="Its name in Chinese.")
    en: str = Field(description="Its name in English.")


class ReportForm(BaseModel):
    reporter: str = Field(description="The reporter's registered name.")
    site: str = Field(description="The site the reporter watches: where a report is.")
    categories: list[CategoryOut] = Field(description="What may be reported.")
    max_photos: int = Field(description="Photos a report may carry.")


class ReplyIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000, description="What the desk tells the reporter.")


def photo_url(event_id: UUID, n: int) -> str:
    """Where the ``n``th photo of a report is served (a path: the page and the API are one origin)."""
    return f"/api/v1/events/{event_id}/photos/{n}"


def report_event(
    place: Place,
    reporter: str,
    contact: str,
    text: str,
    photos: list[bytes],
    category: str = "other",
    building: str = "",
) -> Event:
    """A citizen report as an event; its subject is its own id, so that every report is a situation of its own.

    >>> place = Place(sub_district="n", community="c", grid="g", site="market-street")
    >>> event = report_event(place, "Tea shop", "", "Someone is trying car doors", [])
    >>> alert = report_alert(event)
    >>> alert.route, alert.kind, alert.last_event_id == event.id, alert.dedup_key == event.dedup_key
    (<Role.POLICE: 'police'>, <EventKind.REPORT: 'report'>, True, True)
    >>> report_alert(report_event(place, "Tea shop", "", "Someone is trying car doors", [])).id != alert.id
    True
    >>> stall = report_alert(report_event(place, "Tea shop", "", "Fruit stall on the road", [b"1", b"2"], "road_stall"))
    >>> stall.route, stall.type, stall.attributes["photos"][1].endswith("/photos/2")
    (<Role.CITY_MANAGEMENT: 'city_management'>, 'road_stall', True)
    """
    id_, what = uuid4(), CATEGORIES[category]
    title = f"{what.en}{f' ({building})' if building else ''}, from {reporter}: {text[:80]}"
    attributes = {
        "text": text, "reporter": reporter, "contact": contact, "category": category, "building": building,
        "photos": [photo_url(id_, n) for n in range(1, len(photos) + 1)],
    }  # fmt: skip
    return Event(id=id_, kind=what.kind, type=what.type, severity=what.severity, place=place,
                 source=f"reporter:{reporter}", subject=str(id_), title=title,
                 attributes=attributes, snapshot=photos[0] if photos else None)  # fmt: skip


def report_alert(event: Event) -> Alert:
    """The alert the policy raises for a report, as it would for any event."""
    alert = AlertPolicy().apply(event)
    assert alert is not None, "only a test event raises no alert, and a report is never one"
    return alert


async def registered_reporter(pool: AsyncConnectionPool, key_id: UUID | None) -> Reporter | None:
    """The reporter registered with the key; None for a key without one."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_REPORTER_SQL, (key_id,))).fetchone()
    if row is None:
        return None
    id_, name, contact, sub_district, community, grid, site = row
    return Reporter(id_, name, contact, Place(sub_district=sub_district, community=community, grid=grid, site=site))


async def _reporter(pool: AsyncConnectionPool, key_id: UUID | None) -> Reporter:
    reporter = await registered_reporter(pool, key_id)
    if reporter is None:
        raise HTTPException(403, "this reporter key is not registered: an admin registers reporters")
    return reporter


async def take_token(pool: AsyncConnectionPool, key: str, burst: float, rate: float) -> bool:
    """Takes a token from the bucket of ``key``; False when it is empty."""
    async with pool.connection() as conn:
        taken = await (await conn.execute(TAKE_TOKEN_SQL, {"key": key, "burst": burst, "rate": rate})).fetchone()
    return taken is not None


async def _read_photos(photos: list[UploadFile], limit: int) -> list[bytes]:
    """Each photo cleaned (``clean_photo``, in a thread: decoding is the CPU's), the uploads at most ``limit`` bytes
    together."""
    if len(photos) > MAX_PHOTOS:
        raise HTTPException(422, f"photos: at most {MAX_PHOTOS}, not {len(photos)}")
    cleaned, left = [], limit
    for n, photo in enumerate(photos, start=1):
        data = await photo.read(left + 1)
        left -= len(data)
        if left < 0:
            raise HTTPException(413, f"photos: larger than {limit} bytes together")
        try:
            cleaned.append(await asyncio.to_thread(clean_photo, data))
        except ValueError as exc:
            raise HTTPException(415, f"photo {n}: {exc}") from exc
    return cleaned


@router.post(
    "/reports",
    status_code=201,
    summary="A citizen reporter's report (multipart): category, text, where, up to four photos",
    responses={
        413: refusal("photos too large together"),
        415: refusal("a photo that is not a JPEG, PNG or WebP picture"),
        422: refusal("no text, an unknown category, or more than four photos"),
        429: refusal("too many reports from this key; see Retry-After"),
    },
)
async def post_report(
    pool: Pool,
    settings: Settings,
    who: ReporterKey,
    text: Annotated[str, Form(min_length=1, max_length=4000, description="What the reporter saw.")],
    category: Annotated[str, Form(description=f"One of {', '.join(CATEGORIES)}.")] = "other",
    building: Annotated[str, Form(max_length=100, description="Where within the site, e.g. a building.")] = "",
    photos: Annotated[list[UploadFile] | None, File(description="Up to four JPEG, PNG or WebP pictures.")] = None,
    photo: Annotated[UploadFile | None, File(description="One picture (the form before photos).")] = None,
) -> ReportReceipt:
    reporter = await _reporter(pool, who.key_id)
    if not text.strip():
        raise HTTPException(422, "text: say what you saw")
    if category not in CATEGORIES:
        raise HTTPException(422, f"category: one of {', '.join(CATEGORIES)}")
    data = await _read_photos([*([photo] if photo else []), *(photos or [])], settings.report_max_bytes)
    rate = settings.report_per_hour / 3600
    if not await take_token(pool, f"report:{who.key_id}", settings.report_burst, rate):
        wait = math.ceil(1 / rate) if rate > 0 else 3600
        raise HTTPException(429, f"too many reports from this key; try again in {wait} s", {"Retry-After": str(wait)})
    place = reporter.place
    event = report_event(place, reporter.name, reporter.contact, text.strip(), data, category, building.strip())
    alert = report_alert(event)
    async with pool.connection() as conn, conn.transaction():
        await write_alert(conn, alert, [event])
        await phone_reports.record_report(conn, alert.id, reporter.id, event.id, data[1:])
    log.info("%s report from %s in %s/%s: alert %s", category, reporter.name, place.community, place.grid, alert.id)
    return ReportReceipt(
        alert_id=alert.id, event_id=event.id, photo=bool(data), photos=len(data), kind=alert.kind, route=alert.route
    )


@router.get("/reports/form", summary="What the calling reporter may report, and where")
async def report_form(pool: Pool, who: ReporterKey) -> ReportForm:
    reporter = await _reporter(pool, who.key_id)
    categories = [CategoryOut(id=id_, zh=c.zh, en=c.en) for id_, c in CATEGORIES.items()]
    return ReportForm(reporter=reporter.name, site=reporter.place.site, categories=categories, max_photos=MAX_PHOTOS)


@router.get("/reports/mine", summary="The calling reporter's own reports, newest first, with status and replies")
async def my_reports(pool: Pool, who: ReporterKey) -> list[OwnReport]:
    reporter = await _reporter(pool, who.key_id)
    async with pool.connection() as conn:
        return await phone_reports.own_reports(conn, reporter.id)


@router.post(
    "/reports/{alert_id}/replies",
    status_code=201,
    summary="A desk's reply to a citizen's report: the reporter reads it; the trail and the stream record it",
    responses={404: refusal("no citizen's report of this id that the caller may see")},
)
async def reply(pool: Pool, alert_id: UUID, who: Actor, body: ReplyIn) -> Reply:
    await visible_alert(pool, alert_id, who)
    async with pool.connection() as conn, conn.transaction():
        if not await phone_reports.is_report(conn, alert_id):
            raise HTTPException(404, f"alert {alert_id} is not a registered reporter's report")
        added = await phone_reports.add_reply(conn, alert_id, who, body.text)
    log.info("%s replied to report %s", who.name, alert_id)
    return added


@router.get(
    "/events/{event_id}/photos/{n}",
    summary="The nth photo of a citizen's report (the first is the event's snapshot)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the photo"}},
)
async def report_photo(
    pool: Pool, event_id: UUID, n: Annotated[int, Path(ge=1, le=MAX_PHOTOS)], who: Reader
) -> Response:
    data = await history.event_snapshot(pool, who, event_id, n)
    if data is None:
        raise HTTPException(404, f"no photo {n} of event {event_id} that this key may see")
    return Response(data, media_type=image_type(data) or "application/octet-stream")  # older reports' PNG too
