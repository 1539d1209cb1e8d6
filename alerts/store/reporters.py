"""Registered citizen reporters, and the query functions that register, list and remove them.

A reporter is registered together with its API key, in one transaction, and removed together with the
key's revocation; both are scoped to the caller's places like the duty rotation (``alerts.store.duty``). Every
value is a bound parameter. The routes in ``alerts.api.routes_admin`` check the caller and shape the answer;
what reporters send is ``alerts.api.reports``.

Example:
    >>> body = ReporterIn(sub_district="s", community="c", grid="g7", site="elm-row", name="Corner shop")
    >>> reporter_principal(body, key_id=UUID(int=1)).scope
    {'sub_district': 's', 'community': 'c', 'grid': 'g7', 'site': 'elm-row'}
"""

from __future__ import annotations

from uuid import UUID, uuid4

from psycopg_pool import AsyncConnectionPool
from pydantic import Field

from alerts.auth import INSERT_KEY_SQL, PLACE_LEVELS, Principal, new_key
from alerts.core.models import Role
from alerts.store.duty import GridPlace
from alerts.store.queries import PlaceFilter, scoped_where
from alerts.store.rows import rows_as


class ReporterIn(GridPlace):
    name: str = Field(min_length=1, max_length=200, description="The reporter, e.g. a shop and its keeper.")
    contact: str = Field(default="", max_length=200, description="How the police reach them.")
    site: str = Field(min_length=1, max_length=100, description="The site the reporter watches (a street, a compound).")


class Reporter(ReporterIn):
    id: UUID = Field(description="The reporter's id.")


_COLUMNS = tuple(Reporter.model_fields)  # the table's columns are named after the fields


def reporter_principal(body: ReporterIn, key_id: UUID) -> Principal:
    """Who a reporter's key speaks for: the reporter role, scoped to the site it watches."""
    place = {level: getattr(body, level) for level in PLACE_LEVELS}
    return Principal(name=body.name, role=Role.REPORTER, key_id=key_id, **place)


async def list_reporters(pool: AsyncConnectionPool, who: Principal, flt: PlaceFilter) -> list[Reporter]:
    """The reporters within the caller's scope and the filter, by name."""
    where, params = scoped_where(who, flt, "r")
    sql = f"SELECT {', '.join(_COLUMNS)} FROM reporters r WHERE {where} ORDER BY name"
    async with pool.connection() as conn:
        return rows_as(Reporter, await (await conn.execute(sql, params)).fetchall())


async def add_reporter(pool: AsyncConnectionPool, body: ReporterIn) -> tuple[Reporter, str]:
    """Registers the reporter and a key for it; (the reporter, the key, which is stored only hashed)."""
    key_id = uuid4()
    key, key_params = new_key(reporter_principal(body, key_id))
    reporter = Reporter(id=uuid4(), **body.model_dump())
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(INSERT_KEY_SQL, key_params)
        await conn.execute(
            f"INSERT INTO reporters ({', '.join(_COLUMNS)}, key_id) VALUES ({', '.join(['%s'] * (len(_COLUMNS) + 1))})",
            [*(getattr(reporter, c) for c in _COLUMNS), key_id],
        )
    return reporter, key


async def remove_reporter(pool: AsyncConnectionPool, who: Principal, reporter_id: UUID) -> bool:
    """Removes the reporter and revokes its key if it lies within the caller's scope; whether it did."""
    where, params = scoped_where(who, None, "r")
    async with pool.connection() as conn, conn.transaction():
        sql = f"DELETE FROM reporters r WHERE r.id = %s AND {where} RETURNING key_id"
        row = await (await conn.execute(sql, [reporter_id, *params])).fetchone()
        if row is None:
            return False
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (row[0],))
    return True
