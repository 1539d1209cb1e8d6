"""Sensors, devices and nodes: bucketed readings, health from heartbeats, snapshots, hourly counts.

The handlers check the caller and the request and shape the answer; the queries are ``alerts.store.history``
(readings, hourly counts, pictures) and ``alerts.store.health`` (nodes and devices).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response

from alerts.api.http import DeviceReader, Pool, Reader, SensorReader, get_settings
from alerts.api.media import image_type
from alerts.store import health, history
from alerts.store.health import DeviceHealth, NodeHealth
from alerts.store.history import HourlyCount, HourlyQuery, ReadingBucket, ReadingQuery
from alerts.store.queries import PlaceFilter

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["sensors and devices"])
MAX_BUCKETS = 10_000


@router.get("/devices/{site}/{device}/readings", summary="A sensor's readings over a time range, bucketed")
async def readings(
    request: Request, pool: Pool, site: str, device: str, who: SensorReader, q: Annotated[ReadingQuery, Query()]
) -> list[ReadingBucket]:
    since, until = q.bounds()
    if (until - since) / timedelta(seconds=q.bucket) > MAX_BUCKETS:
        raise HTTPException(422, f"that range has more than {MAX_BUCKETS} buckets: widen bucket or narrow the range")
    return await history.reading_buckets(pool, request.app.state.timescale, who, site, device, q)


def _stale(request: Request) -> timedelta:
    return timedelta(seconds=get_settings(request).node_stale_s)


@router.get("/nodes", summary="Edge nodes with their health: heartbeats, online status, watchdog verdict")
async def nodes(
    request: Request, pool: Pool, who: DeviceReader, flt: Annotated[PlaceFilter, Query()]
) -> list[NodeHealth]:
    return await health.nodes(pool, who, flt, _stale(request))


@router.get("/devices", summary="Cameras and sensors with their health, from their nodes' heartbeats")
async def devices(
    request: Request, pool: Pool, who: DeviceReader, flt: Annotated[PlaceFilter, Query()]
) -> list[DeviceHealth]:
    return await health.devices(pool, who, flt, _stale(request))


@router.get(
    "/events/{event_id}/snapshot",
    summary="An event's picture (JPEG from a camera, or a reporter's JPEG or PNG)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the picture"}},
)
async def snapshot(pool: Pool, event_id: UUID, who: Reader) -> Response:
    data = await history.event_snapshot(pool, who, event_id)
    if data is None:
        raise HTTPException(404, f"no snapshot of event {event_id} that this key may see")
    return Response(data, media_type=image_type(data) or "application/octet-stream")


@router.get("/stats/hourly", summary="Events and situations started per hour, place and kind")
async def hourly(pool: Pool, who: Reader, q: Annotated[HourlyQuery, Query()]) -> list[HourlyCount]:
    return await history.hourly_counts(pool, who, q)
