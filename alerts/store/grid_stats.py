"""Alarms per grid cell and day: how many were raised, how many were false, and how long desks took to take
them up (the first change out of ``new`` in the audit trail: an acknowledgement, or a resolution or false alarm
without one).

Days are the sites' days (``Asia/Shanghai`` unless the API is told otherwise), not UTC's: an alarm at 07:00 in
Shanghai belongs to that day, though it is 23:00 of the day before in UTC.

Example:
    >>> from datetime import UTC
    >>> first_day(datetime(2024, 5, 1, 17, 0, tzinfo=UTC), 2, ZoneInfo("Asia/Shanghai")).isoformat()
    '2024-05-01T00:00:00+08:00'
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from alerts.auth import Principal
from alerts.core.models import EventKind
from alerts.store.queries import AlertFilter, GridFilter, kinds_allowed, where
from alerts.store.rows import rows_as


class GridStatsQuery(GridFilter):
    days: int = Field(default=14, ge=1, le=92, description="The last this many days, today included.")
    kind: list[EventKind] = Field(default_factory=list, description="Only these kinds (default: all you read).")


class GridDay(BaseModel):
    day: date = Field(description="The day, in the sites' time zone.")
    sub_district: str = Field(description="Sub-district.")
    community: str = Field(description="Community.")
    grid: str = Field(description="Grid cell.")
    alarms: int = Field(description="Alerts raised that day.")
    false_alarms: int = Field(description="Of those, how many a desk called false alarms.")
    acknowledged: int = Field(description="Of those, how many a desk has taken up.")
    ack_median_s: float | None = Field(description="Median seconds from raised to taken up; null if none was.")
    ack_mean_s: float | None = Field(description="Mean seconds from raised to taken up; null if none was.")


def first_day(now: datetime, days: int, zone: ZoneInfo) -> datetime:
    """The start, in ``zone``, of the first of the last ``days`` days (today the last)."""
    today = now.astimezone(zone).date()
    start = today - timedelta(days=days - 1)
    return datetime(start.year, start.month, start.day, tzinfo=zone)


_SQL = """
SELECT (a.ts AT TIME ZONE %s)::date AS day, a.sub_district, a.community, a.grid, count(*),
       count(*) FILTER (WHERE a.status = 'false_alarm'), count(taken.at),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM taken.at - a.ts)),
       avg(extract(epoch FROM taken.at - a.ts))::float8
FROM alerts a LEFT JOIN LATERAL (
    SELECT min(h.at) AS at FROM alert_history h
    WHERE h.alert_id = a.id AND h.from_status = 'new' AND h.to_status <> 'new'
) taken ON TRUE
WHERE {where}
GROUP BY day, a.sub_district, a.community, a.grid
ORDER BY day, a.sub_district, a.community, a.grid
LIMIT 10000"""


async def grid_days(pool: AsyncConnectionPool, who: Principal, q: GridStatsQuery, zone: ZoneInfo) -> list[GridDay]:
    """Each grid cell's alarms per day within the caller's places and kinds (its own kinds only: a coverage
    notice is no alarm of its desk)."""
    since = first_day(datetime.now(zone), q.days, zone)
    places = q.model_dump(include=set(GridFilter.model_fields))
    clause, params = where(AlertFilter(kind=kinds_allowed(q.kind, who), since=since, **places), who)
    async with pool.connection() as conn:
        rows = await (await conn.execute(_SQL.format(where=clause), [zone.key, *params])).fetchall()
    return rows_as(GridDay, rows)
