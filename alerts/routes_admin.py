"""Administration: a grid's weekly duty rotation and its registered citizen reporters.

An admin key scoped to a place manages only what lies within it.
"""

from __future__ import annotations

import logging
from datetime import time
from typing import Annotated
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.auth import INSERT_KEY_SQL, PLACE_LEVELS, Permission, Principal, new_key
from alerts.http import Pool, require
from alerts.models import Place, Role
from alerts.queries import GridFilter, PlaceFilter, scoped_where

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["administration"])
Admin = require(Permission.ADMIN)


class GridPlace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sub_district: str = Field(min_length=1, max_length=100, description="Sub-district.")
    community: str = Field(min_length=1, max_length=100, description="Community.")
    grid: str = Field(min_length=1, max_length=100, description="Grid cell.")


class DutyShift(GridPlace):
    """One weekly shift of a grid's rotation."""

    weekday: int = Field(ge=1, le=7, description="ISO weekday: 1 is Monday, 7 Sunday.")
    starts: time = Field(description="Local start time, e.g. 08:00.")
    ends: time = Field(description="Local end time; before starts: the shift runs past midnight; equal: all day.")
    person: str = Field(min_length=1, max_length=200, description="Who is on duty.")
    contact: str = Field(default="", max_length=200, description="How to reach them.")
    timezone: str = Field(default="UTC", description="IANA time zone of starts and ends, e.g. Asia/Shanghai.")

    @field_validator("starts", "ends")
    @classmethod
    def _local(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a local time without offset: the shift's timezone field says where")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class StoredShift(DutyShift):
    id: UUID = Field(description="The shift's id.")


class ReporterIn(GridPlace):
    name: str = Field(min_length=1, max_length=200, description="The reporter, e.g. a shop and its keeper.")
    contact: str = Field(default="", max_length=200, description="How the police reach them.")
    site: str = Field(min_length=1, max_length=100, description="The site the reporter watches (a street, a compound).")


class Reporter(ReporterIn):
    id: UUID = Field(description="The reporter's id.")


class NewReporter(BaseModel):
    reporter: Reporter = Field(description="The registered reporter.")
    key: str = Field(description="The reporter's API key: shown once, stored hashed.")


def check_within(who: Principal, place: BaseModel) -> None:
    """403 unless the place lies within the admin's scope."""
    for level, value in who.scope.items():
        if getattr(place, level, None) != value:
            raise HTTPException(403, f"this key administers only {level} {value!r}")


_SHIFT_COLUMNS = "id, sub_district, community, grid, weekday, starts, ends, person, contact, timezone"


def _shift(row: tuple) -> StoredShift:
    return StoredShift(**dict(zip(_SHIFT_COLUMNS.split(", "), row, strict=True)))


@router.get("/duty", summary="The duty rotation, by grid and weekday")
async def list_duty(pool: Pool, who: Admin, flt: Annotated[GridFilter, Query()]) -> list[StoredShift]:
    where, params = scoped_where(who, flt, "d", PLACE_LEVELS[:3])
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {_SHIFT_COLUMNS} FROM duty_rotation d WHERE {where} ORDER BY community, grid, weekday, starts",
                params,
            )
        ).fetchall()
    return [_shift(r) for r in rows]


@router.post("/duty", status_code=201, summary="Add a shift to a grid's rotation")
async def add_shift(pool: Pool, who: Admin, shift: DutyShift) -> StoredShift:
    check_within(who, shift)
    stored = StoredShift(id=uuid4(), **shift.model_dump())
    values = [getattr(stored, c) for c in _SHIFT_COLUMNS.split(", ")]
    async with pool.connection() as conn:
        await conn.execute(f"INSERT INTO duty_rotation ({_SHIFT_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})", values)
    log.info("%s added duty shift %s", who.name, stored)
    return stored


async def _owned_shift(pool: Pool, shift_id: UUID, who: Principal) -> None:
    where, params = scoped_where(who, None, "d", PLACE_LEVELS[:3])
    async with pool.connection() as conn:
        sql = f"SELECT 1 FROM duty_rotation d WHERE d.id = %s AND {where}"
        found = await (await conn.execute(sql, [shift_id, *params])).fetchone()
    if found is None:
        raise HTTPException(404, f"no shift {shift_id} that this key administers")


@router.put("/duty/{shift_id}", summary="Change a shift")
async def change_shift(pool: Pool, shift_id: UUID, who: Admin, shift: DutyShift) -> StoredShift:
    await _owned_shift(pool, shift_id, who)
    check_within(who, shift)
    stored = StoredShift(id=shift_id, **shift.model_dump())
    columns = _SHIFT_COLUMNS.split(", ")[1:]
    async with pool.connection() as conn:
        await conn.execute(
            f"UPDATE duty_rotation SET {', '.join(f'{c} = %s' for c in columns)} WHERE id = %s",
            [*(getattr(stored, c) for c in columns), shift_id],
        )
    return stored


@router.delete("/duty/{shift_id}", status_code=204, summary="Remove a shift")
async def remove_shift(pool: Pool, shift_id: UUID, who: Admin) -> None:
    await _owned_shift(pool, shift_id, who)
    async with pool.connection() as conn:
        await conn.execute("DELETE FROM duty_rotation WHERE id = %s", (shift_id,))


_REPORTER_COLUMNS = "id, name, contact, sub_district, community, grid, site"


@router.get("/reporters", summary="Registered citizen reporters")
async def list_reporters(pool: Pool, who: Admin, flt: Annotated[PlaceFilter, Query()]) -> list[Reporter]:
    where, params = scoped_where(who, flt, "r")
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(f"SELECT {_REPORTER_COLUMNS} FROM reporters r WHERE {where} ORDER BY name", params)
        ).fetchall()
    return [Reporter(**dict(zip(_REPORTER_COLUMNS.split(", "), r, strict=True))) for r in rows]


@router.post("/reporters", status_code=201, summary="Register a citizen reporter; returns its key once")
async def add_reporter(pool: Pool, who: Admin, body: ReporterIn) -> NewReporter:
    check_within(who, body)
    place = Place(**body.model_dump(include={"sub_district", "community", "grid", "site"}))
    key_id = uuid4()
    key, key_params = new_key(
        Principal(name=body.name, role=Role.REPORTER, key_id=key_id, **place.model_dump(exclude={"device"}))
    )
    reporter = Reporter(id=uuid4(), **body.model_dump())
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(INSERT_KEY_SQL, key_params)
        await conn.execute(
            f"INSERT INTO reporters ({_REPORTER_COLUMNS}, key_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [*(getattr(reporter, c) for c in _REPORTER_COLUMNS.split(", ")), key_id],
        )
    log.info("%s registered reporter %r in %s/%s", who.name, body.name, body.community, body.grid)
    return NewReporter(reporter=reporter, key=key)


@router.delete("/reporters/{reporter_id}", status_code=204, summary="Remove a reporter and revoke its key")
async def remove_reporter(pool: Pool, reporter_id: UUID, who: Admin) -> None:
    where, params = scoped_where(who, None, "r")
    async with pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(
                f"DELETE FROM reporters r WHERE r.id = %s AND {where} RETURNING key_id", [reporter_id, *params]
            )
        ).fetchone()
        if row is None:
            raise HTTPException(404, f"no reporter {reporter_id} that this key administers")
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (row[0],))
