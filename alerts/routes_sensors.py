"""Sensors, devices and nodes: bucketed readings, health from heartbeats, snapshots, hourly counts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerts.auth import Permission
from alerts.http import Pool, Reader, get_settings, require
from alerts.media import image_type
from alerts.models import EventKind
from alerts.queries import PlaceFilter, check_order, kinds_allowed, scoped_where
from alerts.timescale import bucket_sql

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["sensors and devices"])
SensorReader = require(Permission.READINGS)
DeviceReader = require(Permission.DEVICES)
MAX_BUCKETS = 10_000


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = Field(default=None, description="From this time (default: a day before until).")
    until: AwareDatetime | None = Field(default=None, description="Before this time (default: now).")

    @model_validator(mode="after")
    def _order(self) -> TimeRange:
        check_order(self.since, self.until)
        return self

    def bounds(self) -> tuple[datetime, datetime]:
        """(since, until) with the defaults filled in; a day before the first day is the first day.

        >>> TimeRange(until="0001-01-01T00:00:00Z").bounds()[0].year
        1
        """
        until = self.until or datetime.now(UTC)
        if self.since is not None:
            return self.since, until
        try:
            return until - timedelta(days=1), until
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC), until


class ReadingQuery(TimeRange):
    quantity: list[str] = Field(default_factory=list, description="Only these quantities (repeatable).")
    bucket: int = Field(default=300, ge=1, le=31 * 86400, description="Bucket width in seconds.")


class ReadingBucket(BaseModel):
    bucket: datetime = Field(description="Start of the bucket.")
    quantity: str = Field(description="What was measured.")
    unit: str = Field(description="Unit of the values.")
    avg: float = Field(description="Mean of the bucket's values.")
    min: float = Field(description="Smallest value.")
    max: float = Field(description="Largest value.")
    count: int = Field(description="How many readings.")


class NodeHealth(BaseModel):
    node_id: str = Field(description="The edge node.")
    place: dict[str, str] = Field(description="Its site and the levels above.")
    started_at: datetime = Field(description="When its process started.")
    heartbeat_at: datetime = Field(description="Its newest heartbeat.")
    healthy: bool = Field(description="Whether its newest heartbeat is recent (PATROLNET_NODE_STALE_S).")
    counters: dict[str, float] = Field(description="Its counters: messages, drops, spool depth and the like.")


class DeviceHealth(BaseModel):
    site: str = Field(description="The site.")
    device: str = Field(description="Camera or sensor id.")
    node_id: str = Field(description="The node that reports it.")
    place: dict[str, str] = Field(description="The levels above the site.")
    type: str = Field(description="camera, or the sensor's adapter.")
    online: bool = Field(description="Whether its node last saw it delivering.")
    stale: bool = Field(description="True when its node's heartbeat is old: online is then out of date.")
    last_seen: datetime | None = Field(description="Its newest message.")
    detail: dict[str, Any] = Field(description="Battery, fps, reconnects and the like.")


class HourlyQuery(TimeRange, PlaceFilter):
    kind: list[EventKind] = Field(default_factory=list, description="Only these kinds (repeatable).")


class HourlyCount(BaseModel):
    bucket: datetime = Field(description="Start of the hour.")
    place: dict[str, str] = Field(description="sub_district, community, grid, site.")
    kind: EventKind = Field(description="Kind of the events.")
    events: int = Field(description="Events in the hour.")
    starts: int = Field(description="Situations that started in the hour (alerts raised or reopened).")


@router.get("/devices/{site}/{device}/readings", summary="A sensor's readings over a time range, bucketed")
async def readings(
    request: Request, pool: Pool, site: str, device: str, who: SensorReader, q: Annotated[ReadingQuery, Query()]
) -> list[ReadingBucket]:
    since, until = q.bounds()
    width = timedelta(seconds=q.bucket)
    if (until - since) / width > MAX_BUCKETS:
        raise HTTPException(422, f"that range has more than {MAX_BUCKETS} buckets: widen bucket or narrow the range")
    scope, params = scoped_where(who, None, "r")
    quantity = " AND r.quantity = ANY(%s)" if q.quantity else ""
    sql = (
        f"SELECT {bucket_sql(request.app.state.timescale)} AS b, quantity, min(unit), avg(value), min(value),"
        f" max(value), count(*) FROM readings r WHERE r.site = %s AND r.device = %s AND r.ts >= %s AND r.ts < %s"
        f" AND {scope}{quantity} GROUP BY b, quantity ORDER BY b, quantity"
    )
    args = [width, site, device, since, until, *params, *([q.quantity] if q.quantity else [])]
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, args)).fetchall()
    return [
        ReadingBucket(bucket=b, quantity=qty, unit=unit, avg=avg, min=lo, max=hi, count=n)
        for b, qty, unit, avg, lo, hi, n in rows
    ]


async def _health_rows(request: Request, pool: Pool, who, flt: PlaceFilter, sql: str, alias: str) -> list[tuple]:
    """Rows of a health table within the caller's scope; ``sql`` takes the staleness interval first."""
    where, params = scoped_where(who, flt, alias)
    stale = timedelta(seconds=get_settings(request).node_stale_s)
    async with pool.connection() as conn:
        return await (await conn.execute(sql.format(where=where), [stale, *params])).fetchall()


@router.get("/nodes", summary="Edge nodes with their health, from their heartbeats")
async def nodes(
    request: Request, pool: Pool, who: DeviceReader, flt: Annotated[PlaceFilter, Query()]
) -> list[NodeHealth]:
    sql = (
        "SELECT node_id, sub_district, community, grid, site, started_at, heartbeat_at, counters,"
        " heartbeat_at > now() - %s FROM nodes n WHERE {where} ORDER BY community, site, node_id"
    )
    return [
        NodeHealth(
            node_id=node,
            place={"sub_district": sd, "community": c, "grid": g, "site": s},
            started_at=started,
            heartbeat_at=beat,
            healthy=healthy,
            counters=counters,
        )
        for node, sd, c, g, s, started, beat, counters, healthy in await _health_rows(request, pool, who, flt, sql, "n")
    ]


@router.get("/devices", summary="Cameras and sensors with their health, from their nodes' heartbeats")
async def devices(
    request: Request, pool: Pool, who: DeviceReader, flt: Annotated[PlaceFilter, Query()]
) -> list[DeviceHealth]:
    sql = (
        "SELECT site, device, node_id, sub_district, community, grid, type, online, last_seen, detail,"
        " heartbeat_at <= now() - %s FROM devices d WHERE {where} ORDER BY community, site, device"
    )
    return [
        DeviceHealth(
            site=s,
            device=d,
            node_id=node,
            place={"sub_district": sd, "community": c, "grid": g},
            type=t,
            online=online,
            stale=is_stale,
            last_seen=seen,
            detail=detail,
        )
        for s, d, node, sd, c, g, t, online, seen, detail, is_stale in await _health_rows(
            request, pool, who, flt, sql, "d"
        )
    ]


@router.get(
    "/events/{event_id}/snapshot",
    summary="An event's picture (JPEG from a camera, or a reporter's JPEG or PNG)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "the picture"}},
)
async def snapshot(pool: Pool, event_id: UUID, who: Reader) -> Response:
    scope, params = scoped_where(who, None, "e")
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                f"SELECT snapshot FROM events e WHERE e.id = %s AND e.kind = ANY(%s) AND {scope}",
                [event_id, list(who.kinds), *params],
            )
        ).fetchone()
    if row is None or row[0] is None:
        raise HTTPException(404, f"no snapshot of event {event_id} that this key may see")
    data = bytes(row[0])
    return Response(data, media_type=image_type(data) or "application/octet-stream")


@router.get("/stats/hourly", summary="Events and situations started per hour, place and kind")
async def hourly(pool: Pool, who: Reader, q: Annotated[HourlyQuery, Query()]) -> list[HourlyCount]:
    since, until = q.bounds()
    where, params = scoped_where(who, q, "h")
    sql = (
        "SELECT bucket, sub_district, community, grid, site, kind, events, starts FROM event_counts_hourly h"
        f" WHERE h.kind = ANY(%s) AND h.bucket >= %s AND h.bucket < %s AND {where}"
        " ORDER BY bucket, community, site, kind LIMIT 10000"
    )
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, [kinds_allowed(q.kind, who), since, until, *params])).fetchall()
    return [
        HourlyCount(
            bucket=b,
            place={"sub_district": sd, "community": c, "grid": g, "site": s},
            kind=kind,
            events=events,
            starts=starts,
        )
        for b, sd, c, g, s, kind, events, starts in rows
    ]
