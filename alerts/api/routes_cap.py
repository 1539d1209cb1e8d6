"""The OASIS CAP 1.2 feed: the same alerts as the list, as CAP messages in an Atom feed, or one at a time."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from psycopg_pool import AsyncConnectionPool

from alerts.api.cap import CAP_TYPE, CapMessages, atom_feed, cap_document
from alerts.api.http import Pool, Reader, base_url, get_settings, visible_alert
from alerts.api.media import image_type
from alerts.api.routes_alerts import before_of, snapshot_url
from alerts.auth import Principal
from alerts.store.alert_queries import ALERT_VERSION, PICTURE_COLUMNS, alert_pictures, alerts_json, alerts_page_rows
from alerts.store.clips import clip_url
from alerts.store.queries import AlertPage
from alerts.store.rows import StoredAlert

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["cap"])
ATOM_TYPE = "application/atom+xml"
MESSAGES = CapMessages()
"""This process's messages written lately: the feed's pages and single messages share them."""


def _pictures(base: str, snapshots: list[bytes], clip_ids: list[UUID]) -> list[tuple[str, str]]:
    """(URL, MIME type) of an alert's snapshots and clips, from its ``PICTURE_COLUMNS``."""
    pictures = [
        (snapshot_url(base, UUID(bytes=bytes(each[:16]))), image_type(bytes(each[16:])) or "application/octet-stream")
        for each in snapshots
    ]
    return pictures + [(clip_url(base, clip_id), "video/mp4") for clip_id in clip_ids]


@router.get(
    "/alerts.cap",
    summary="The alert list as an Atom feed of CAP 1.2 messages (same filters and cursor as the list)",
    response_class=Response,
    responses={200: {"content": {ATOM_TYPE: {}}, "description": "Atom feed; each entry's content is a CAP alert"}},
)
async def cap_feed(request: Request, pool: Pool, who: Reader, page: Annotated[AlertPage, Query()]) -> Response:
    # The plain case of this route is answered by alerts.api.list_shortcut before it gets here.
    return Response(await feed(request, pool, who, page, before_of(page)), media_type=ATOM_TYPE)


async def feed(
    request: Request, pool: AsyncConnectionPool, who: Principal, page: AlertPage, before: tuple[datetime, UUID] | None
) -> bytes:
    """The feed's page: the list's page (``before``: its cursor's position) as CAP messages in an Atom feed."""
    # Each alert's version and pictures: together the key of its kept message. Only the alerts whose message is not
    # kept are read again, as the database writes their JSON (a newer state, if one came in between, is kept under
    # its own version; an alert gone in between is left out).
    columns = f"a.id, {ALERT_VERSION}, coalesce(a.status_at, a.last_seen), {PICTURE_COLUMNS}"
    rows = (await alerts_page_rows(pool, who, page, before, columns))[0]
    base = base_url(request)
    sender = get_settings(request).cap_sender
    wanted = {row[0]: (row[1], _pictures(base, *row[3:])) for row in rows}
    found = {id_: MESSAGES.kept(version, sender, base, pictures) for id_, (version, pictures) in wanted.items()}
    missing = [id_ for id_, message in found.items() if message is None]
    for id_, (version, alert_json) in (await alerts_json(pool, missing) if missing else {}).items():
        alert = StoredAlert.model_validate_json(alert_json)
        found[id_] = MESSAGES.keep(version, sender, base, wanted[id_][1], alert)
    messages = [message for message in found.values() if message is not None]
    updated = max((row[2] for row in rows), default=datetime.now(UTC))
    query = f"?{request.url.query}" if request.url.query else ""
    return atom_feed(messages, f"patrolnet alerts for {who.name}", f"{base}{request.url.path}{query}", updated)


@router.get(
    "/alerts/{alert_id}/cap",
    summary="One alert as a CAP 1.2 message",
    response_class=Response,
    responses={200: {"content": {CAP_TYPE: {}}, "description": "a CAP 1.2 alert"}},
)
async def cap_one(request: Request, pool: Pool, alert_id: UUID, who: Reader) -> Response:
    alert = await visible_alert(pool, alert_id, who)
    base = base_url(request)
    pictures = _pictures(base, *await alert_pictures(pool, alert.id))
    body = cap_document(MESSAGES.of(alert, get_settings(request).cap_sender, base, pictures))
    return Response(body, media_type=CAP_TYPE)
