"""What was recorded over time, within the caller's places: a sensor's readings in buckets, events and
situations counted per hour, an event's picture.

Every value is a bound parameter; the bucket function is TimescaleDB's ``time_bucket`` where that extension
is installed, else plain PostgreSQL's (``alerts.store.timescale``). The routes in ``alerts.api.routes_sensors`` check
the caller and the range, and shape the answer.

Example:
    >>> TimeRange(until="2024-05-02T00:00:00Z").bounds()[0].isoformat()
    '2024-05-01T00:00:00+00:00'
    >>> TimeRange(since="2024-05-02T00:00:00Z", until="2024-05-01T00:00:00Z")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for TimeRange
      Value error, since must be before until [type=value_error, ...
    ...
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from psycopg_pool import AsyncConnectionPool
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerts.auth import Principal
from alerts.core.models import EventKind
from alerts.store.queries import AlertFilter, PlaceFilter, check_order, kinds_allowed, scoped_where, where
from alerts.store.rows import rows_as
from alerts.store.timescale import bucket_sql


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


class HourlyQuery(TimeRange, PlaceFilter):
    kind: list[EventKind] = Field(default_factory=list, description="Only these kinds (repeatable).")


class HourlyCount(BaseModel):
    bucket: datetime = Field(description="Start of the hour.")
    place: dict[str, str] = Field(description="sub_district, community, grid, site.")
    kind: EventKind = Field(description="Kind of the events.")
    events: int = Field(description="Events in the hour.")
    starts: int = Field(description="Situations that started in the hour (alerts raised or reopened).")


async def reading_buckets(
    pool: AsyncConnectionPool, timescale: bool, who: Principal, site: str, device: str, q: ReadingQuery
) -> list[ReadingBucket]:
    """A device's readings in ``q``'s range and buckets, per bucket and quantity, if within the caller's scope."""
    since, until = q.bounds()
    scope, params = scoped_where(who, None, "r")
    quantity = " AND r.quantity = ANY(%s)" if q.quantity else ""
    sql = (
        f"SELECT {bucket_sql(timescale)} AS b, quantity, min(unit), avg(value), min(value),"
        f" max(value), count(*) FROM readings r WHERE r.site = %s AND r.device = %s AND r.ts >= %s AND r.ts < %s"
        f" AND {scope}{quantity} GROUP BY b, quantity ORDER BY b, quantity"
    )
    args = [timedelta(seconds=q.bucket), site, device, since, until, *params, *([q.quantity] if q.quantity else [])]
    async with pool.connection() as conn:
        return rows_as(ReadingBucket, await (await conn.execute(sql, args)).fetchall())


async def hourly_counts(pool: AsyncConnectionPool, who: Principal, q: HourlyQuery) -> list[HourlyCount]:
    """Events and situations started per hour, place and kind, of the kinds the caller may read (10000 at most)."""
    since, until = q.bounds()
    where, params = scoped_where(who, q, "h")
    sql = (
        "SELECT bucket, json_build_object('sub_district', sub_district, 'community', community, 'grid', grid,"
        " 'site', site), kind, events, starts FROM event_counts_hourly h"
        f" WHERE h.kind = ANY(%s) AND h.bucket >= %s AND h.bucket < %s AND {where}"
        " ORDER BY bucket, community, site, kind LIMIT 10000"
    )
    async with pool.connection() as conn:
        rows = await (await conn.execute(sql, [kinds_allowed(q.kind, who), since, until, *params])).fetchall()
    return rows_as(HourlyCount, rows)


async def event_snapshot(pool: AsyncConnectionPool, who: Principal, event_id: UUID, n: int = 1) -> bytes | None:
    """An event's picture (the ``n``th photo of a citizen's report: the first is its snapshot, the others are in
    ``report_photos``), if it has one and the caller may see the event: one of a kind its role reads, or one of an
    alert it may see (a camera's trouble reaching a desk as a coverage notice)."""
    scope, params = scoped_where(who, None, "e")
    alert_clause, alert_params = where(AlertFilter(), who)
    picture = "snapshot" if n == 1 else "(SELECT p.photo FROM report_photos p WHERE p.event_id = e.id AND p.n = %s)"
    # An event's alerts are at its site: the site's alerts (by index), then the (alert, event) key.
    sql = (
        f"SELECT {picture} FROM events e WHERE e.id = %s AND {scope} AND (e.kind = ANY(%s) OR EXISTS ("
        "SELECT 1 FROM alerts a JOIN alert_events l ON l.alert_id = a.id AND l.event_id = e.id"
        f" WHERE a.site = e.site AND {alert_clause}))"
    )
    async with pool.connection() as conn:
        args = [*([n] if n != 1 else []), event_id, *params, list(who.kinds), *alert_params]
        row = await (await conn.execute(sql, args)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])
