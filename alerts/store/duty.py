"""The duty rotation: each grid's weekly shifts, and the query functions that read and change them.

A shift is read, changed or removed only where the caller's place scope reaches; the functions say
"not found" (None or False) for a shift outside it, so an id outside the scope reveals nothing. Every
value is a bound parameter. The routes in ``alerts.api.routes_admin`` check the caller and shape the answer.

Example:
    >>> shift = DutyShift(sub_district="s", community="c", grid="g7", weekday=5, starts="22:00",
    ...                   ends="06:00", person="Officer Li", timezone="Asia/Shanghai")
    >>> shift.starts > shift.ends  # runs past midnight
    True
    >>> DutyShift(**{**shift.model_dump(), "timezone": "Mars/Olympus"})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for DutyShift
    timezone
      Value error, unknown time zone 'Mars/Olympus' [type=value_error, input_value='Mars/Olympus', input_type=str]
    ...
"""

from __future__ import annotations

from datetime import time
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.auth import PLACE_LEVELS, Principal
from alerts.store.queries import GridFilter, scoped_where
from alerts.store.rows import rows_as

GRID_LEVELS = PLACE_LEVELS[:3]  # a shift belongs to a grid, not a site


class GridPlace(BaseModel):
    """A place down to the grid, as the administration routes take it; unknown fields are refused."""

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


_COLUMNS = tuple(StoredShift.model_fields)  # the table's columns are named after the fields
_CHANGEABLE = tuple(DutyShift.model_fields)


async def _found(pool: AsyncConnectionPool, who: Principal, shift_id: UUID, statement: str) -> bool:
    """Whether ``statement`` returns a row for the shift; its ``{where}`` keeps to the caller's scope."""
    where, params = scoped_where(who, None, "d", GRID_LEVELS)
    async with pool.connection() as conn:
        return await (await conn.execute(statement.format(where=where), [shift_id, *params])).fetchone() is not None


async def list_shifts(pool: AsyncConnectionPool, who: Principal, flt: GridFilter) -> list[StoredShift]:
    """The shifts within the caller's scope and the filter, by community, grid, weekday and start."""
    where, params = scoped_where(who, flt, "d", GRID_LEVELS)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM duty_rotation d WHERE {where} ORDER BY community, grid, weekday, starts"
    async with pool.connection() as conn:
        return rows_as(StoredShift, await (await conn.execute(sql, params)).fetchall())


async def add_shift(pool: AsyncConnectionPool, shift: DutyShift) -> StoredShift:
    """Stores the shift under a new id."""
    stored = StoredShift(id=uuid4(), **shift.model_dump())
    sql = f"INSERT INTO duty_rotation ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
    async with pool.connection() as conn:
        await conn.execute(sql, [getattr(stored, c) for c in _COLUMNS])
    return stored


async def administers(pool: AsyncConnectionPool, who: Principal, shift_id: UUID) -> bool:
    """Whether the shift exists within the caller's scope."""
    return await _found(pool, who, shift_id, "SELECT 1 FROM duty_rotation d WHERE d.id = %s AND {where}")


async def replace_shift(pool: AsyncConnectionPool, shift_id: UUID, shift: DutyShift) -> StoredShift:
    """Overwrites the shift ``shift_id`` with ``shift`` (the caller has checked it may)."""
    async with pool.connection() as conn:
        await conn.execute(
            f"UPDATE duty_rotation SET {', '.join(f'{c} = %s' for c in _CHANGEABLE)} WHERE id = %s",
            [*(getattr(shift, c) for c in _CHANGEABLE), shift_id],
        )
    return StoredShift(id=shift_id, **shift.model_dump())


async def remove_shift(pool: AsyncConnectionPool, who: Principal, shift_id: UUID) -> bool:
    """Removes the shift if it lies within the caller's scope; whether it did."""
    return await _found(pool, who, shift_id, "DELETE FROM duty_rotation d WHERE d.id = %s AND {where} RETURNING d.id")
