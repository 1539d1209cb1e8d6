"""Administration: a grid's weekly duty rotation, its registered citizen reporters, and the site registry.

An admin key scoped to a place manages only what lies within it. The handlers check the caller and the
place and shape the answer; the queries are ``alerts.store.duty``, ``alerts.store.reporters`` and
``alerts.store.sites`` (a site's nodes are registered with their broker credential: ``patrolnet broker add-node``).
"""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from alerts.api.http import Admin, Pool
from alerts.auth import Principal
from alerts.core.protocol import NAME_PATTERN
from alerts.store import duty, reporters, sites
from alerts.store.duty import DutyShift, StoredShift
from alerts.store.queries import GridFilter, PlaceFilter
from alerts.store.reporters import Reporter, ReporterIn
from alerts.store.sites import Site, SiteIn

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["administration"])


class NewReporter(BaseModel):
    reporter: Reporter = Field(description="The registered reporter.")
    key: str = Field(description="The reporter's API key: shown once, stored hashed.")


def check_within(who: Principal, place: BaseModel) -> None:
    """403 unless the place lies within the admin's scope."""
    for level, value in who.scope.items():
        if getattr(place, level, None) != value:
            raise HTTPException(403, f"this key administers only {level} {value!r}")


def _no_shift(shift_id: UUID) -> HTTPException:
    return HTTPException(404, f"no shift {shift_id} that this key administers")


@router.get("/duty", summary="The duty rotation, by grid and weekday")
async def list_duty(pool: Pool, who: Admin, flt: Annotated[GridFilter, Query()]) -> list[StoredShift]:
    return await duty.list_shifts(pool, who, flt)


@router.post("/duty", status_code=201, summary="Add a shift to a grid's rotation")
async def add_shift(pool: Pool, who: Admin, shift: DutyShift) -> StoredShift:
    check_within(who, shift)
    stored = await duty.add_shift(pool, shift)
    log.info("%s added duty shift %s", who.name, stored)
    return stored


@router.put("/duty/{shift_id}", summary="Change a shift")
async def change_shift(pool: Pool, shift_id: UUID, who: Admin, shift: DutyShift) -> StoredShift:
    if not await duty.administers(pool, who, shift_id):
        raise _no_shift(shift_id)
    check_within(who, shift)
    return await duty.replace_shift(pool, shift_id, shift)


@router.delete("/duty/{shift_id}", status_code=204, summary="Remove a shift")
async def remove_shift(pool: Pool, shift_id: UUID, who: Admin) -> None:
    if not await duty.remove_shift(pool, who, shift_id):
        raise _no_shift(shift_id)


@router.get("/reporters", summary="Registered citizen reporters")
async def list_reporters(pool: Pool, who: Admin, flt: Annotated[PlaceFilter, Query()]) -> list[Reporter]:
    return await reporters.list_reporters(pool, who, flt)


@router.post("/reporters", status_code=201, summary="Register a citizen reporter; returns its key once")
async def add_reporter(pool: Pool, who: Admin, body: ReporterIn) -> NewReporter:
    check_within(who, body)
    reporter, key = await reporters.add_reporter(pool, body)
    log.info("%s registered reporter %r in %s/%s", who.name, body.name, body.community, body.grid)
    return NewReporter(reporter=reporter, key=key)


@router.delete("/reporters/{reporter_id}", status_code=204, summary="Remove a reporter and revoke its key")
async def remove_reporter(pool: Pool, reporter_id: UUID, who: Admin) -> None:
    if not await reporters.remove_reporter(pool, who, reporter_id):
        raise HTTPException(404, f"no reporter {reporter_id} that this key administers")


@router.get("/sites", summary="The registered sites, their places and nodes")
async def list_sites(pool: Pool, who: Admin, flt: Annotated[PlaceFilter, Query()]) -> list[Site]:
    return await sites.list_sites_within(pool, who, flt)


@router.post(
    "/sites",
    status_code=201,
    summary="Register a site's place (201), or change it (200); ingest takes every message's place from here",
    responses={200: {"model": Site, "description": "The site was registered already: its place is changed."}},
)
async def put_site(pool: Pool, who: Admin, body: SiteIn, response: Response) -> Site:
    check_within(who, body)
    created = await sites.put_site(pool, who, body)
    if created is None:
        raise HTTPException(403, f"site {body.site!r} is registered outside the places this key administers")
    if not created:
        response.status_code = 200
    log.info("%s %s site %s in %s/%s/%s", who.name, "registered" if created else "changed", body.site,
             body.sub_district, body.community, body.grid)  # fmt: skip
    [stored] = await sites.list_sites_within(pool, who, PlaceFilter(site=body.site))
    return stored


@router.delete("/sites/{site}", status_code=204, summary="Remove a site and its nodes' registrations")
async def remove_site(pool: Pool, who: Admin, site: Annotated[str, Path(pattern=NAME_PATTERN)]) -> None:
    if not await sites.remove_site_within(pool, who, site):
        raise HTTPException(404, f"no site {site!r} that this key administers")
    log.info("%s removed site %s", who.name, site)
