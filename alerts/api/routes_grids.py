"""Grid cells and their teams: the grids within the caller's places, one grid's view (its open alerts, its sites'
nodes and devices with their health, its team with the leader), and an admin's import of grids and people from
CSV files and XLSX workbooks (``alerts.store.grid_import``: line-numbered problems, nothing half-imported).

The queries are ``alerts.store.grids``, ``alerts.store.health``, ``alerts.store.sites`` and the alert list's.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from alerts.api.http import Admin, ErrorBody, Pool, Reader, get_settings, refusal
from alerts.auth import Permission
from alerts.core.models import AlertStatus
from alerts.store import grids, health
from alerts.store.alert_queries import alerts_page
from alerts.store.grid_import import ImportRefused, ImportResult, import_files
from alerts.store.grids import Grid, GridTeam
from alerts.store.health import DeviceHealth, NodeHealth
from alerts.store.queries import AlertPage, GridFilter, PlaceFilter
from alerts.store.rows import StoredAlert
from alerts.store.sites import Site, list_sites_within

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/grids", tags=["grids"])
OPEN = [AlertStatus.NEW, AlertStatus.ACKNOWLEDGED]
MAX_OPEN = 500


class GridView(BaseModel):
    grid: Grid = Field(description="The grid's record.")
    team: GridTeam = Field(description="Who answers for it: the leader, then the members on duty, then the others.")
    alerts: list[StoredAlert] = Field(
        description=f"Its open alerts (new or acknowledged) the caller may read, newest first (at most {MAX_OPEN})."
    )
    sites: list[Site] = Field(description="Its registered sites and their nodes.")
    nodes: list[NodeHealth] | None = Field(description="Its edge nodes' health; null for a role without devices.")
    devices: list[DeviceHealth] | None = Field(description="Its cameras' and sensors' health; likewise.")


@router.get("", summary="The grids within the caller's places, with the size of each team and its leader")
async def list_grids(pool: Pool, who: Reader, flt: Annotated[GridFilter, Query()]) -> list[Grid]:
    async with pool.connection() as conn:
        return await grids.list_grids(conn, who, flt)


@router.get(
    "/{community}/{grid}",
    summary="One grid: its open alerts, its sites' nodes and devices with their health, its team and leader",
    responses={404: refusal("no such grid within the caller's places")},
)
async def grid_view(request: Request, pool: Pool, community: str, grid: str, who: Reader) -> GridView:
    async with pool.connection() as conn:
        found = await grids.find_grid(conn, who, community, grid)
        if found is None:
            raise HTTPException(404, f"no grid {grid!r} in community {community!r} that this key may see")
        team = await grids.team(conn, community, grid)
    place = PlaceFilter(sub_district=found.sub_district, community=community, grid=grid)
    page = AlertPage(**place.model_dump(), status=OPEN, limit=MAX_OPEN)
    alerts, _ = await alerts_page(pool, who, page, None)
    stale = timedelta(seconds=get_settings(request).node_stale_s)
    devices = who.may(Permission.DEVICES)
    return GridView(
        grid=found,
        team=team,
        alerts=alerts,
        sites=await list_sites_within(pool, who, place),
        nodes=await health.nodes(pool, who, place, stale) if devices else None,
        devices=await health.devices(pool, who, place, stale) if devices else None,
    )


@router.post(
    "/import",
    summary="Import grids and people from CSV files or XLSX workbooks: all of it, or nothing",
    response_model=ImportResult,
    responses={422: refusal("nothing imported: errors lists each problem as file:line: field: why")},
)
async def import_grids(
    pool: Pool,
    who: Admin,
    files: Annotated[
        list[UploadFile],
        File(description="CSV files or XLSX workbooks of grids and of people; a header row says which (login)."),
    ],
) -> ImportResult | JSONResponse:
    named = [(f.filename or f"file {n}", await f.read()) for n, f in enumerate(files, 1)]
    async with pool.connection() as conn:
        try:
            return await import_files(conn, who, named)
        except ImportRefused as exc:
            problems = ErrorBody(detail=f"{len(exc.errors)} problem(s): nothing imported", errors=exc.errors)
            return JSONResponse(status_code=422, content=problems.model_dump())
