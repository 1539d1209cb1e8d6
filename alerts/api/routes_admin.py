"""Administration: a grid's weekly duty rotation and its registered citizen reporters.

An admin key scoped to a place manages only what lies within it. The handlers check the caller and the
place and shape the answer; the queries are ``alerts.store.duty`` and ``alerts.store.reporters``.
"""

from __future__ import annotations

import logging
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from alerts.api.http import Admin, Pool
from alerts.auth import Principal
from alerts.store import duty, reporters
from alerts.store.duty import DutyShift, StoredShift
from alerts.store.queries import GridFilter, PlaceFilter
from alerts.store.reporters import Reporter, ReporterIn

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
