"""Citizen reports: a registered reporter posts text and an optional photo; the grid's police get an alert.

A report is an Event (kind report) like any other: the alert policy turns it into its alert, and both are
written on the API's connection pool with the store's statements (``write_alert``), its change logged for the
streams and webhooks like every alert change.

The photo's type is read from its first bytes (JPEG or PNG only) and its size
is capped. Each reporter key has a token bucket kept in the database, not in
the API process: with N API replicas behind a balancer a per-process bucket
would let a key through N times as often, and the bucket row's lock makes
concurrent reports from one key take their tokens one after the other.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from alerts.api.http import Pool, ReporterKey, Settings, refusal
from alerts.api.media import image_type
from alerts.core.models import Alert, Event, EventKind, Place, Severity
from alerts.core.policy import AlertPolicy
from alerts.store.database import write_alert

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["citizen reports"])

# One token per report; the bucket refills at `rate` tokens a second up to `burst`.
TAKE_TOKEN_SQL = """
INSERT INTO rate_buckets AS b (key, tokens, at) VALUES (%(key)s, %(burst)s - 1, now())
ON CONFLICT (key) DO UPDATE SET
    tokens = least(%(burst)s, b.tokens + extract(epoch FROM now() - b.at) * %(rate)s) - 1, at = now()
WHERE least(%(burst)s, b.tokens + extract(epoch FROM now() - b.at) * %(rate)s) >= 1
RETURNING tokens"""


_REPORTER_SQL = "SELECT name, contact, sub_district, community, grid, site FROM reporters WHERE key_id = %s"


class ReportReceipt(BaseModel):
    alert_id: UUID = Field(description="The alert the community police received.")
    event_id: UUID = Field(description="The report as an event.")
    photo: bool = Field(description="Whether a photo came with it.")


def report_event(place: Place, reporter: str, contact: str, text: str, photo: bytes | None) -> Event:
    """A citizen report as an event; its subject is its own id, so that every report is a situation of its own.

    >>> place = Place(sub_district="n", community="c", grid="g", site="market-street")
    >>> event = report_event(place, "Tea shop", "", "Someone is trying car doors", None)
    >>> alert = report_alert(event)
    >>> alert.route, alert.kind, alert.last_event_id == event.id, alert.dedup_key == event.dedup_key
    (<Role.POLICE: 'police'>, <EventKind.REPORT: 'report'>, True, True)
    >>> report_alert(report_event(place, "Tea shop", "", "Someone is trying car doors", None)).id != alert.id
    True
    """
    id_ = uuid4()
    return Event(id=id_, kind=EventKind.REPORT, type="citizen_report", severity=Severity.MAJOR, place=place,
                 source=f"reporter:{reporter}", subject=str(id_), title=f"Report from {reporter}: {text[:80]}",
                 attributes={"text": text, "reporter": reporter, "contact": contact}, snapshot=photo)  # fmt: skip


def report_alert(event: Event) -> Alert:
    """The alert the policy raises for a report, as it would for any event."""
    alert = AlertPolicy().apply(event)
    assert alert is not None, "only a test event raises no alert, and a report is never one"
    return alert


async def registered_reporter(pool: AsyncConnectionPool, key_id: UUID | None) -> tuple[str, str, Place] | None:
    """(name, contact, place watched) of the reporter registered with the key; None for a key without one."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_REPORTER_SQL, (key_id,))).fetchone()
    if row is None:
        return None
    name, contact, sub_district, community, grid, site = row
    return name, contact, Place(sub_district=sub_district, community=community, grid=grid, site=site)


async def take_token(pool: AsyncConnectionPool, key: str, burst: float, rate: float) -> bool:
    """Takes a token from the bucket of ``key``; False when it is empty."""
    async with pool.connection() as conn:
        taken = await (await conn.execute(TAKE_TOKEN_SQL, {"key": key, "burst": burst, "rate": rate})).fetchone()
    return taken is not None


async def _read_photo(photo: UploadFile, limit: int) -> bytes:
    data = await photo.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"photo: larger than {limit} bytes")
    if image_type(data) is None:
        raise HTTPException(415, "photo: only JPEG and PNG images are accepted (checked by content, not name)")
    return data


@router.post(
    "/reports",
    status_code=201,
    summary="A citizen reporter's text and optional photo (multipart), for the community police",
    responses={
        413: refusal("photo too large"),
        415: refusal("photo not JPEG or PNG"),
        429: refusal("too many reports from this key; see Retry-After"),
    },
)
async def post_report(
    pool: Pool,
    settings: Settings,
    who: ReporterKey,
    text: Annotated[str, Form(min_length=1, max_length=4000, description="What the reporter saw.")],
    photo: Annotated[UploadFile | None, File(description="A JPEG or PNG picture.")] = None,
) -> ReportReceipt:
    reporter = await registered_reporter(pool, who.key_id)
    if reporter is None:
        raise HTTPException(403, "this reporter key is not registered: an admin registers reporters")
    if not text.strip():
        raise HTTPException(422, "text: say what you saw")
    data = await _read_photo(photo, settings.report_max_bytes) if photo is not None else None
    rate = settings.report_per_hour / 3600
    if not await take_token(pool, f"report:{who.key_id}", settings.report_burst, rate):
        wait = math.ceil(1 / rate) if rate > 0 else 3600
        raise HTTPException(429, f"too many reports from this key; try again in {wait} s", {"Retry-After": str(wait)})
    name, contact, place = reporter
    event = report_event(place, name, contact, text.strip(), data)
    alert = report_alert(event)
    async with pool.connection() as conn, conn.transaction():
        await write_alert(conn, alert, [event])
    log.info("report from %s in %s/%s: alert %s", name, place.community, place.grid, alert.id)
    return ReportReceipt(alert_id=alert.id, event_id=event.id, photo=data is not None)
