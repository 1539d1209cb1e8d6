"""Edge nodes' and their devices' health, as their heartbeats last told it, within the caller's places.

A node is healthy while its newest heartbeat is younger than ``stale``; its ``online`` is its latest online
status (the retained status it publishes, or its last will, which a later heartbeat overrules);
``unconfirmed`` and ``oldest_unconfirmed_s`` say what waited in its spool for ingest's confirmation at its
newest heartbeat; and ``offline_since`` is set while the centre's watchdog (``alerts.intake.watchdog``) holds a
``node_offline`` alert open for it. A device's ``online`` is what its node last said, and ``stale`` marks it
out of date when that node's heartbeat is old. Ingest writes the ``nodes``, ``node_status`` and ``devices`` tables
(``alerts.store.database``); the routes in ``alerts.api.routes_sensors`` read them here.

Example:
    >>> NodeHealth.model_validate(dict(node_id="node-1", place={"site": "elm-row"}, healthy=True, counters={},
    ...     started_at="2024-05-01T08:00:00Z", heartbeat_at="2024-05-01T08:01:00Z", online=False,
    ...     offline_since="2024-05-01T08:02:00Z")).offline
    True
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, computed_field

from alerts.auth import Principal
from alerts.store.queries import PlaceFilter, scoped_where
from alerts.store.rows import M, rows_as


class NodeHealth(BaseModel):
    node_id: str = Field(description="The edge node.")
    place: dict[str, str] = Field(description="Its site and the levels above.")
    started_at: datetime = Field(description="When its process started.")
    heartbeat_at: datetime = Field(description="Its newest heartbeat.")
    healthy: bool = Field(description="Whether its newest heartbeat is recent (PATROLNET_NODE_STALE_S).")
    counters: dict[str, float] = Field(description="Its counters: messages, drops, spool depth and the like.")
    online: bool | None = Field(
        default=None,
        description="Its online status: false when its last will fired and no heartbeat came since; true when it"
        " said it is up, or a heartbeat came after its will; null when it never published a status.",
    )
    status_at: datetime | None = Field(default=None, description="When the centre received its latest status.")
    offline_since: datetime | None = Field(
        default=None, description="While the watchdog holds a node_offline alert open for it: when it was raised."
    )
    unconfirmed: int = Field(
        default=0, description="Messages in its spool that ingest had not confirmed storing, at its newest heartbeat."
    )
    oldest_unconfirmed_s: float | None = Field(
        default=None, description="Age in seconds of the oldest of them at that heartbeat; null when none waited."
    )

    @computed_field(description="Whether the watchdog considers it offline (a node_offline alert is open).")
    def offline(self) -> bool:
        return self.offline_since is not None


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


# Each selects its model's fields in order, the place levels gathered into one JSON object. A node's open
# node_offline alert is found through the partial index of migration 0004 (few rows: the open ones).
_NODES_SQL = (
    "SELECT n.node_id, json_build_object('sub_district', n.sub_district, 'community', n.community, 'grid', n.grid,"
    " 'site', n.site), started_at, heartbeat_at, heartbeat_at > now() - %s, counters,"
    " s.online OR s.received_at <= n.received_at, s.received_at,"
    " (SELECT min(a.ts) FROM alerts a WHERE a.type = 'node_offline' AND a.active AND a.source = n.node_id),"
    " coalesce((counters->>'unconfirmed')::float8, 0)::int, (counters->>'oldest_unconfirmed_s')::float8"
    " FROM nodes n LEFT JOIN node_status s ON s.node_id = n.node_id"
    " WHERE {where} ORDER BY n.community, n.site, n.node_id"
)
_DEVICES_SQL = (
    "SELECT site, device, node_id, json_build_object('sub_district', sub_district, 'community', community,"
    " 'grid', grid), type, online, heartbeat_at <= now() - %s, last_seen, detail"
    " FROM devices d WHERE {where} ORDER BY community, site, device"
)


async def _health(
    pool: AsyncConnectionPool,
    who: Principal,
    flt: PlaceFilter,
    stale: timedelta,
    model: type[M],
    sql: str,
    alias: str,
) -> list[M]:
    """Rows of a health table within the caller's scope; ``sql`` takes the staleness interval first."""
    where, params = scoped_where(who, flt, alias)
    async with pool.connection() as conn:
        return rows_as(model, await (await conn.execute(sql.format(where=where), [stale, *params])).fetchall())


async def nodes(pool: AsyncConnectionPool, who: Principal, flt: PlaceFilter, stale: timedelta) -> list[NodeHealth]:
    """The nodes within the caller's scope and the filter, by community, site and id."""
    return await _health(pool, who, flt, stale, NodeHealth, _NODES_SQL, "n")


async def devices(pool: AsyncConnectionPool, who: Principal, flt: PlaceFilter, stale: timedelta) -> list[DeviceHealth]:
    """The cameras and sensors within the caller's scope and the filter, by community, site and id."""
    return await _health(pool, who, flt, stale, DeviceHealth, _DEVICES_SQL, "d")
