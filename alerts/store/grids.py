"""Grid cells and their teams: each grid's record (place, name, addresses or boundary), its members and leader,
and who answers for an alert raised in it.

A grid is named by (community, grid), as places, duty rotations and alerts name it (migration 0011). A person
belongs to at most one grid's team here (an import moves them), and a grid has at most one leader. Every
function takes an async connection, so an import writes grids and people in one transaction and the API and
the ``patrolnet grid`` commands run the same statements. Reads keep to the caller's place scope (down to the
grid: a site-scoped desk sees its site's grid).

Example:
    >>> GridIn(sub_district="riverside", community="east-gate", grid="g07", addresses=["5 Elm Row"]).addresses
    ['5 Elm Row']
    >>> GridIn(sub_district="r", community="c", grid="g", boundary={"type": "Point", "coordinates": [1, 2]})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for GridIn
    boundary
      Value error, a GeoJSON Polygon: {"type": "Polygon", "coordinates": [[[lon, lat], ...]]} ...
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator

from alerts.auth import Principal
from alerts.core.models import Role
from alerts.store.duty import GRID_LEVELS, GridPlace
from alerts.store.queries import GridFilter, scoped_where
from alerts.store.rows import rows_as

log = logging.getLogger(__name__)


class GridIn(GridPlace):
    """A grid cell as a district records it."""

    name: str = Field(default="", max_length=200, description="What people call it, e.g. Elm Row blocks 1-6.")
    addresses: list[str] = Field(
        default_factory=list, max_length=2000, description="The addresses it covers: buildings, courtyards, streets."
    )
    boundary: dict[str, Any] | None = Field(default=None, description="Its outline, a GeoJSON Polygon, if drawn.")

    @field_validator("boundary")
    @classmethod
    def _polygon(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        rings = value.get("coordinates") if value is not None else None
        if value is not None and (value.get("type") != "Polygon" or not isinstance(rings, list) or not rings):
            raise ValueError('a GeoJSON Polygon: {"type": "Polygon", "coordinates": [[[lon, lat], ...]]}')
        return value


class Grid(GridIn):
    """A grid cell with the size of its team."""

    members: int = Field(description="How many people its team has, the leader included.")
    leader: str | None = Field(description="Its leader's name, if it has one.")


class TeamMember(BaseModel):
    """One of a grid's team, and how to reach them."""

    person_id: UUID = Field(description="The person's id.")
    login: str = Field(description="What they sign in with.")
    name: str = Field(description="Full name.")
    phone: str = Field(description="How the desk reaches them.")
    role: Role = Field(description="Their role.")
    on_duty: bool = Field(description="Whether they are on duty now.")
    leader: bool = Field(description="Whether they lead the grid's team.")


class GridTeam(BaseModel):
    """Who answers for a grid: its leader first, then its members on duty, then the others."""

    community: str = Field(description="The grid's community.")
    grid: str = Field(description="The grid.")
    leader: TeamMember | None = Field(description="Its leader, if it has one.")
    members: list[TeamMember] = Field(description="The whole team, the leader first, then those on duty, by name.")


_GRID = """
SELECT g.sub_district, g.community, g.grid, g.name, g.addresses, g.boundary,
       count(p.id), max(p.name) FILTER (WHERE m.leader)
FROM grids g LEFT JOIN grid_members m USING (community, grid) LEFT JOIN people p
    ON p.id = m.person_id AND p.disabled_at IS NULL
WHERE {where}
GROUP BY g.community, g.grid ORDER BY g.community, g.grid"""

_UPSERT_GRID = """
INSERT INTO grids (community, grid, sub_district, name, addresses, boundary) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (community, grid) DO UPDATE SET sub_district = EXCLUDED.sub_district, name = EXCLUDED.name,
    addresses = EXCLUDED.addresses, boundary = EXCLUDED.boundary, updated_at = now()
RETURNING (xmax = 0) AS created"""

# Disabled people answer for nothing: they are left out of the team.
_TEAM = """
SELECT p.id, p.login, p.name, p.phone, p.role, p.on_duty, m.leader
FROM grid_members m JOIN people p ON p.id = m.person_id
WHERE m.community = %s AND m.grid = %s AND p.disabled_at IS NULL
ORDER BY m.leader DESC, p.on_duty DESC, p.name"""


async def put_grid(conn: AsyncConnection, grid: GridIn) -> bool:
    """Records the grid, or changes its record; True when it is new."""
    values = (grid.community, grid.grid, grid.sub_district, grid.name, grid.addresses, grid.boundary)
    row = await (await conn.execute(_UPSERT_GRID, (*values[:5], Jsonb(values[5]) if values[5] else None))).fetchone()
    assert row is not None  # an upsert with RETURNING always returns its row
    return bool(row[0])


async def list_grids(conn: AsyncConnection, who: Principal, flt: GridFilter | None = None) -> list[Grid]:
    """The grids within the caller's scope and the filter, by community and grid."""
    where, params = scoped_where(who, flt, "g", GRID_LEVELS)
    return rows_as(Grid, await (await conn.execute(_GRID.format(where=where), params)).fetchall())


async def find_grid(conn: AsyncConnection, who: Principal, community: str, grid: str) -> Grid | None:
    """One grid, if it lies within the caller's scope."""
    where, params = scoped_where(who, GridFilter(community=community, grid=grid), "g", GRID_LEVELS)
    rows = await (await conn.execute(_GRID.format(where=where), params)).fetchall()
    return rows_as(Grid, rows)[0] if rows else None


async def team(conn: AsyncConnection, community: str, grid: str) -> GridTeam:
    """Who answers for the grid (an empty team when it has none, or is not recorded)."""
    members = rows_as(TeamMember, await (await conn.execute(_TEAM, (community, grid))).fetchall())
    leader = members[0] if members and members[0].leader else None
    return GridTeam(community=community, grid=grid, leader=leader, members=members)


async def grid_team(pool: AsyncConnectionPool, community: str, grid: str) -> GridTeam:
    """``team`` on a pooled connection: who answers for an alert raised in the grid."""
    async with pool.connection() as conn:
        return await team(conn, community, grid)


async def set_member(conn: AsyncConnection, community: str, grid: str, person_id: UUID, leader: bool) -> None:
    """Puts the person in the grid's team (out of any other grid's), as its leader when ``leader`` (the leader
    before stays a member), in one transaction."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM grid_members WHERE person_id = %s AND (community, grid) <> (%s, %s)",
            (person_id, community, grid),
        )
        if leader:
            await conn.execute(
                "UPDATE grid_members SET leader = false WHERE community = %s AND grid = %s AND leader"
                " AND person_id <> %s",
                (community, grid, person_id),
            )
        await conn.execute(
            "INSERT INTO grid_members (community, grid, person_id, leader) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (community, grid, person_id) DO UPDATE SET leader = EXCLUDED.leader",
            (community, grid, person_id, leader),
        )


async def grid_places(conn: AsyncConnection) -> dict[tuple[str, str], str]:
    """Every recorded grid's sub-district, by (community, grid)."""
    rows = await (await conn.execute("SELECT community, grid, sub_district FROM grids")).fetchall()
    return {(community, grid): sub_district for community, grid, sub_district in rows}
