"""Shops of a community and their weekly duty rotation; the queries that register, change and read them.

Each week (Monday to Sunday, Asia/Shanghai) one shop of a community is on duty: it patrols and checks its patrols
in from its phone. The rotation goes through the registered shops in the order they were registered (their
``position``), one a week, and skips the shops that opted out. ``Rotation`` is the rule, as a pure function:

- **A change never rewrites what was announced.** The rotation remembers one week (its anchor) and the shop on
  duty then; every later week counts on from it. Whenever the list changes (a shop registers, opts out or back
  in), the anchor moves to the current week and the shop the old rotation had on duty this week, so this week
  keeps its shop and the turns go on from there in the registered order.
- **Opting out is fair to the others.** An opted-out shop is passed over when its turn comes; nobody else's turn
  is skipped or doubled, and the shops after it simply come one week sooner. A shop that opts out during its own
  week hands that week to the next shop. Coming back, it takes its place in the order again.
- **A swap is between two weeks.** The community officer gives week W to shop X: W's shop D then takes X's own
  week (the week nearest W on which X would have been on duty, from this week on), so each still does one week.
  Swapped weeks are kept apart from the rotation (``shop_duty_swaps``) and outlive re-anchoring; a swap naming a
  shop that has since opted out no longer counts.

Weeks before the anchor are not answered: the rotation no longer knows them (what a shop did is in its
check-ins). Every function takes an async connection (the API's pool gives one; the CLI opens one), but for the
reminders' few synchronous queries (``alerts.notify.reminders`` sends from a thread).

Example (shops by position; 5 opted out; the rotation anchored on 2025-01-06 with shop 1):
    >>> r = Rotation(order=tuple(range(1, 13)), opted_out=frozenset({5}), anchor_week=date(2025, 1, 6), anchor=1)
    >>> weeks = [date(2025, 1, 6) + timedelta(weeks=k) for k in range(12)]
    >>> [r.duty(w) for w in weeks]
    [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 1]
    >>> swaps = r.swap(weeks[3], 9, this_week=weeks[0])  # week 3 to shop 9: shop 4 takes shop 9's week (7)
    >>> swaps == {weeks[3]: 9, weeks[7]: 4}
    True
    >>> [r.with_swaps(swaps).duty(w) for w in weeks]
    [1, 2, 3, 9, 6, 7, 8, 4, 10, 11, 12, 1]
    >>> week_of(datetime(2025, 1, 12, 17, 0, tzinfo=UTC))  # Sunday 17:00 UTC is Monday 01:00 in Shanghai
    datetime.date(2025, 1, 13)
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import psycopg
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alerts.auth import INSERT_KEY_SQL, PLACE_LEVELS, Principal, new_key
from alerts.core.models import Role
from alerts.store.queries import scoped_where
from alerts.store.rows import rows_as
from alerts.store.webhook_registry import Robot

log = logging.getLogger(__name__)

WEEK_ZONE = ZoneInfo("Asia/Shanghai")
COMMUNITY_LEVELS = PLACE_LEVELS[:2]  # a rotation belongs to a community, whatever grid a caller is scoped to
MAX_WEEKS = 53


def week_of(moment: datetime) -> date:
    """The Monday (in Asia/Shanghai) of the week holding ``moment``."""
    local = moment.astimezone(WEEK_ZONE).date()
    return local - timedelta(days=local.weekday())


def this_week() -> date:
    return week_of(datetime.now(UTC))


def _weeks(start: date, end: date) -> int:
    return (end - start).days // 7


@dataclass(frozen=True)
class Rotation:
    """A community's rotation: the registered shops' positions in order, those opted out, the anchor week and the
    position on duty then, and the swapped weeks (week -> position)."""

    order: tuple[int, ...]
    opted_out: frozenset[int]
    anchor_week: date
    anchor: int
    swaps: Mapping[date, int] = field(default_factory=dict)

    def cycle(self) -> list[int]:
        """The shops taking turns, starting with the anchor week's (the anchor, or the next one that takes
        turns)."""
        start = bisect.bisect_left(self.order, self.anchor)
        return [p for p in self.order[start:] + self.order[:start] if p not in self.opted_out]

    def regular(self, week: date) -> int | None:
        """The shop the rotation puts on duty in ``week`` (a Monday), swaps aside; None when no shop takes turns.
        ValueError for a week before the anchor."""
        if week < self.anchor_week:
            raise ValueError(f"the rotation changed on the week of {self.anchor_week}: it does not know {week}")
        cycle = self.cycle()
        return cycle[_weeks(self.anchor_week, week) % len(cycle)] if cycle else None

    def duty(self, week: date) -> int | None:
        """The shop on duty in ``week``: a swap's, if one names a shop that takes turns, else the rotation's."""
        swapped = self.swaps.get(week)
        if swapped is not None and swapped in self.order and swapped not in self.opted_out:
            return swapped
        return self.regular(week)

    def swap(self, week: date, shop: int, this_week: date) -> dict[date, int]:
        """The swapped weeks that give ``week`` to ``shop``: that week, and the week nearest it (from
        ``this_week`` on, the later of two as near) that ``shop`` had, given to the shop ``week`` had.
        ValueError for a past week or a shop that does not take turns."""
        if week < this_week:
            raise ValueError(f"the week of {week} is past")
        if shop not in self.order or shop in self.opted_out:
            raise ValueError("the shop does not take turns (not registered here, or opted out)")
        displaced = self.duty(week)
        if displaced == shop:
            return {}
        span = len(self.cycle())
        candidates = [week + timedelta(weeks=k) for k in range(-span, span + 1) if k]
        own = [w for w in candidates if w >= this_week and self.duty(w) == shop]
        if not own or displaced is None:
            return {week: shop}
        nearest = min(own, key=lambda w: (abs(_weeks(week, w)), -w.toordinal()))
        return {week: shop, nearest: displaced}

    def with_swaps(self, swaps: Mapping[date, int]) -> Rotation:
        return replace(self, swaps={**self.swaps, **swaps})


class ShopFields(BaseModel):
    """What the community officer says about a shop, besides its place."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="The shop's name, as reminders show it.")
    address: str = Field(default="", max_length=300, description="Where it is.")
    owner: str = Field(default="", max_length=200, description="Who keeps it.")
    phone: str = Field(default="", max_length=40, description="The owner's mobile; DingTalk and WeCom text reminders "
                       "mention it.")  # fmt: skip
    officer_id: UUID | None = Field(default=None, description="The police officer (a person) it reports to.")


class ShopIn(ShopFields):
    sub_district: str = Field(min_length=1, max_length=100, description="Sub-district.")
    community: str = Field(min_length=1, max_length=100, description="Community: one rotation each.")


class ShopChange(BaseModel):
    """The fields to change; those left out stay."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, description="Name.")
    address: str | None = Field(default=None, max_length=300, description="Address.")
    owner: str | None = Field(default=None, max_length=200, description="Owner.")
    phone: str | None = Field(default=None, max_length=40, description="Owner's mobile.")
    officer_id: UUID | None = Field(default=None, description="The officer it reports to.")
    opted_out: bool | None = Field(default=None, description="true: passed over by the rotation; false: back in.")


class Shop(ShopIn):
    id: UUID = Field(description="The shop's id.")
    position: int = Field(description="Its place in the rotation's order (registration order).")
    opted_out: bool = Field(description="Passed over by the rotation.")


class SwapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    community: str = Field(min_length=1, max_length=100, description="The community's rotation.")
    week: date = Field(description="The week's Monday (Asia/Shanghai).")
    shop_id: UUID = Field(description="The shop to be on duty that week.")

    @field_validator("week")
    @classmethod
    def _monday(cls, value: date) -> date:
        if value.weekday() != 0:
            raise ValueError("a week is named by its Monday")
        return value


class DutyWeek(BaseModel):
    week: date = Field(description="The week's Monday (Asia/Shanghai).")
    shop: Shop | None = Field(description="The shop on duty; null when no shop takes turns.")
    swapped: bool = Field(description="Given by the community officer, not by the rotation.")


class CheckIn(BaseModel):
    id: UUID = Field(description="The check-in's id.")
    shop_id: UUID = Field(description="The shop.")
    at: datetime = Field(description="When it patrolled.")
    note: str = Field(description="What it says.")
    photo: bool = Field(description="Whether a photo came with it (GET .../photo).")
    received_at: datetime = Field(description="When the API got it.")


_SHOP_COLUMNS = tuple(Shop.model_fields)  # the table's columns are named after the fields
_SELECT_SHOPS = f"SELECT {', '.join(f's.{c}' for c in _SHOP_COLUMNS)} FROM shops s"
_CHECKIN_SELECT = "SELECT c.id, c.shop_id, c.at, c.note, c.photo IS NOT NULL, c.received_at FROM shop_checkins c"


class NotFound(LookupError):
    """Nothing of that id or community within the caller's places."""


def _in_scope(who: Principal, alias: str) -> tuple[str, list[Any]]:
    return scoped_where(who, None, alias, COMMUNITY_LEVELS)


async def _rotation(conn: AsyncConnection, community: str, lock: bool = False) -> tuple[Rotation, dict[int, Shop]]:
    """The community's rotation and its shops by position (its row locked until the transaction ends if
    ``lock``); NotFound when it has none."""
    sql = "SELECT anchor_week, anchor_position FROM shop_rotations WHERE community = %s" + (" FOR UPDATE" * lock)
    row = await (await conn.execute(sql, (community,))).fetchone()
    if row is None:
        raise NotFound(f"no shops registered in community {community!r}")
    shops = rows_as(Shop, await (await conn.execute(f"{_SELECT_SHOPS} WHERE s.community = %s ORDER BY s.position",
                                                    (community,))).fetchall())  # fmt: skip
    swaps = await conn.execute(
        "SELECT w.week, s.position FROM shop_duty_swaps w JOIN shops s ON s.id = w.shop_id"
        " WHERE w.community = %s AND w.week >= %s", (community, row[0]),
    )  # fmt: skip
    by_position = {s.position: s for s in shops}
    rotation = Rotation(
        order=tuple(by_position), opted_out=frozenset(p for p, s in by_position.items() if s.opted_out),
        anchor_week=row[0], anchor=row[1], swaps=dict(await swaps.fetchall()),
    )  # fmt: skip
    return rotation, by_position


async def _reanchor(conn: AsyncConnection, community: str, before: Rotation) -> None:
    """After a change of the list: this week keeps the shop ``before`` had on duty, and turns go on from it."""
    week = this_week()
    anchor = before.regular(week) if week >= before.anchor_week else None
    await conn.execute(
        "UPDATE shop_rotations SET anchor_week = %s, anchor_position = %s, changed_at = now() WHERE community = %s",
        (week, before.anchor if anchor is None else anchor, community),
    )


async def _check_officer(conn: AsyncConnection, officer_id: UUID | None, community: str) -> None:
    if officer_id is None:
        return
    row = await (await conn.execute("SELECT role, community FROM people WHERE id = %s AND disabled_at IS NULL",
                                    (officer_id,))).fetchone()  # fmt: skip
    if row is None or row[0] != Role.POLICE or row[1] not in (None, community):
        raise ValueError(f"officer_id: no police officer {officer_id} serving community {community!r}")


def shop_principal(shop: ShopIn, key_id: UUID) -> Principal:
    """Who a shop's phone speaks for: a reporter key scoped to its community, which may post check-ins."""
    return Principal(name=f"shop: {shop.name}", role=Role.REPORTER, key_id=key_id, sub_district=shop.sub_district,
                     community=shop.community)  # fmt: skip


async def register(conn: AsyncConnection, body: ShopIn) -> tuple[Shop, str]:
    """Registers a shop at the end of its community's order, with a key for its phone; (the shop, the key, shown
    once). ValueError for a name taken in the community, another sub-district, or an officer who is not one."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO shop_rotations (community, sub_district, anchor_week, anchor_position) VALUES (%s, %s, %s, 1)"
            " ON CONFLICT (community) DO NOTHING", (body.community, body.sub_district, this_week()),
        )  # fmt: skip
        before, shops = await _rotation(conn, body.community, lock=True)
        row = await (await conn.execute("SELECT sub_district FROM shop_rotations WHERE community = %s",
                                        (body.community,))).fetchone()  # fmt: skip
        if row is None or row[0] != body.sub_district:
            raise ValueError(f"community {body.community!r} lies in sub-district {row[0] if row else None!r}")
        if any(s.name == body.name for s in shops.values()):
            raise ValueError(f"name: community {body.community!r} has a shop {body.name!r} already")
        await _check_officer(conn, body.officer_id, body.community)
        shop = Shop(id=uuid4(), position=max(shops, default=0) + 1, opted_out=False, **body.model_dump())
        key, key_params = new_key(shop_principal(body, uuid4()))
        await conn.execute(INSERT_KEY_SQL, key_params)
        await conn.execute(
            f"INSERT INTO shops ({', '.join(_SHOP_COLUMNS)}, key_id) VALUES ({', '.join(['%s'] * len(_SHOP_COLUMNS))},"
            " %s)", [*(getattr(shop, c) for c in _SHOP_COLUMNS), key_params[0]],
        )  # fmt: skip
        await _reanchor(conn, body.community, before)
    return shop, key


async def new_key_for(conn: AsyncConnection, shop: Shop) -> str:
    """A new key for the shop's phone (shown once), its old key revoked at once: a lost or leaked link ends."""
    async with conn.transaction():
        old = await (await conn.execute("SELECT key_id FROM shops WHERE id = %s FOR UPDATE", (shop.id,))).fetchone()
        if old is None:
            raise NotFound(f"no shop {shop.id}")
        key, key_params = new_key(shop_principal(shop, uuid4()))
        await conn.execute(INSERT_KEY_SQL, key_params)
        await conn.execute("UPDATE shops SET key_id = %s WHERE id = %s", (key_params[0], shop.id))
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (old[0],))
    return key


async def list_shops(conn: AsyncConnection, who: Principal, community: str | None) -> list[Shop]:
    """The shops within the caller's places (and the community, if given), by community and order."""
    where, params = _in_scope(who, "s")
    if community is not None:
        where, params = f"{where} AND s.community = %s", [*params, community]
    sql = f"{_SELECT_SHOPS} WHERE {where} ORDER BY s.community, s.position"
    return rows_as(Shop, await (await conn.execute(sql, params)).fetchall())


async def get_shop(conn: AsyncConnection, who: Principal, shop_id: UUID) -> Shop:
    """The shop if it lies within the caller's places; NotFound otherwise."""
    where, params = _in_scope(who, "s")
    row = await (await conn.execute(f"{_SELECT_SHOPS} WHERE s.id = %s AND {where}", [shop_id, *params])).fetchone()
    if row is None:
        raise NotFound(f"no shop {shop_id} within this caller's places")
    return rows_as(Shop, [row])[0]


async def change(conn: AsyncConnection, shop: Shop, body: ShopChange) -> Shop:
    """Changes the fields given; opting out or back in moves the rotation's anchor to this week."""
    values = body.model_dump(exclude_unset=True)
    if not values:
        return shop
    async with conn.transaction():
        before, _ = await _rotation(conn, shop.community, lock=True)
        if "officer_id" in values:
            await _check_officer(conn, values["officer_id"], shop.community)
        try:
            await conn.execute(f"UPDATE shops SET {', '.join(f'{c} = %s' for c in values)} WHERE id = %s",
                               [*values.values(), shop.id])  # fmt: skip
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"name: community {shop.community!r} has a shop {values.get('name')!r} already") from None
        if values.get("opted_out", shop.opted_out) != shop.opted_out:
            await _reanchor(conn, shop.community, before)
    return shop.model_copy(update=values)


async def swap(conn: AsyncConnection, body: SwapIn, set_by: str) -> list[DutyWeek]:
    """Gives the week to the shop, and that shop's nearest week to the displaced one (``Rotation.swap``); the
    weeks changed. ValueError for a past week or a shop that does not take turns here."""
    async with conn.transaction():
        rotation, shops = await _rotation(conn, body.community, lock=True)
        position = next((p for p, s in shops.items() if s.id == body.shop_id), None)
        if position is None:
            raise ValueError(f"shop_id: no shop {body.shop_id} in community {body.community!r}")
        swaps = rotation.swap(body.week, position, this_week())
        for week, swapped in swaps.items():
            await conn.execute(
                "INSERT INTO shop_duty_swaps (community, week, shop_id, set_by) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (community, week) DO UPDATE SET shop_id = EXCLUDED.shop_id, set_by = EXCLUDED.set_by,"
                " set_at = now()", (body.community, week, shops[swapped].id, set_by),
            )  # fmt: skip
    return [DutyWeek(week=w, shop=shops[p], swapped=True) for w, p in sorted(swaps.items())]


async def check_community(conn: AsyncConnection, who: Principal, community: str) -> None:
    """NotFound unless the community has a rotation within the caller's places."""
    where, params = _in_scope(who, "r")
    found = await conn.execute(f"SELECT 1 FROM shop_rotations r WHERE r.community = %s AND {where}",
                               [community, *params])  # fmt: skip
    if await found.fetchone() is None:
        raise NotFound(f"no shop rotation in community {community!r} within this caller's places")


async def duty(conn: AsyncConnection, who: Principal, community: str, first: date, weeks: int) -> list[DutyWeek]:
    """The shop on duty in each of ``weeks`` weeks from ``first`` (a Monday). NotFound outside the caller's places,
    ValueError for weeks before the rotation last changed."""
    await check_community(conn, who, community)
    rotation, shops = await _rotation(conn, community)
    answer = []
    for k in range(weeks):
        week = first + timedelta(weeks=k)
        position = rotation.duty(week)
        swapped = position is not None and position != rotation.regular(week)
        answer.append(DutyWeek(week=week, shop=shops.get(position) if position else None, swapped=swapped))
    return answer


async def communities(conn: AsyncConnection) -> list[str]:
    """Every community with a rotation."""
    return [row[0] for row in await (await conn.execute("SELECT community FROM shop_rotations ORDER BY 1")).fetchall()]


async def shop_of_key(conn: AsyncConnection, key_id: UUID | None) -> Shop | None:
    """The shop whose phone holds the key; None for any other key."""
    row = await (await conn.execute(f"{_SELECT_SHOPS} WHERE s.key_id = %s", (key_id,))).fetchone()
    return rows_as(Shop, [row])[0] if row else None


async def add_checkin(
    conn: AsyncConnection, shop: Shop, key_id: UUID, at: datetime, note: str, photo: tuple[bytes, str] | None
) -> CheckIn:
    """Stores a patrol the shop checked in."""
    data, mime = photo if photo else (None, None)
    checkin_id = uuid4()
    row = await (await conn.execute(
        "INSERT INTO shop_checkins (id, shop_id, at, note, photo, photo_type, key_id) VALUES (%s, %s, %s, %s, %s, %s,"
        " %s) RETURNING received_at", (checkin_id, shop.id, at, note, data, mime, key_id),
    )).fetchone()  # fmt: skip
    assert row is not None, "INSERT ... RETURNING returns its row"
    return CheckIn(id=checkin_id, shop_id=shop.id, at=at, note=note, photo=data is not None, received_at=row[0])


async def checkins(conn: AsyncConnection, shop_id: UUID, limit: int) -> list[CheckIn]:
    """The shop's newest check-ins, newest first (the caller has checked it may see the shop)."""
    sql = f"{_CHECKIN_SELECT} WHERE c.shop_id = %s ORDER BY c.at DESC LIMIT %s"
    return rows_as(CheckIn, await (await conn.execute(sql, (shop_id, limit))).fetchall())


async def checkin_photo(conn: AsyncConnection, who: Principal, checkin_id: UUID) -> tuple[bytes, str]:
    """A check-in's photo and its type; NotFound outside the caller's places or without a photo."""
    where, params = _in_scope(who, "s")
    row = await (await conn.execute(
        "SELECT c.photo, c.photo_type FROM shop_checkins c JOIN shops s ON s.id = c.shop_id"
        f" WHERE c.id = %s AND c.photo IS NOT NULL AND {where}", [checkin_id, *params],
    )).fetchone()  # fmt: skip
    if row is None:
        raise NotFound(f"no photo of check-in {checkin_id} within this caller's places")
    return bytes(row[0]), row[1]


def community_hooks(conn: psycopg.Connection, community: str, week: date) -> list[Robot]:
    """The active webhooks and robots of the community itself (scoped to it, not to a grid or site) that have not
    taken the week's reminder."""
    rows = conn.execute(
        "SELECT w.id, w.url, w.secret, w.format, w.message, w.mention_userids, w.mention_mobiles FROM webhooks w"
        " WHERE w.active AND w.community = %s AND w.grid IS NULL AND w.site IS NULL AND NOT EXISTS (SELECT 1 FROM"
        " shop_reminders r WHERE r.webhook_id = w.id AND r.week = %s AND r.community = %s AND r.error IS NULL)"
        " ORDER BY w.created_at", (community, week, community),
    )  # fmt: skip
    return [Robot(*row) for row in rows]


def record_reminder(
    conn: psycopg.Connection, shop: Shop, week: date, hook: UUID, status: int | None, error: str | None
) -> None:
    conn.execute(
        "INSERT INTO shop_reminders (community, week, shop_id, webhook_id, status, error) VALUES (%s, %s, %s, %s, %s,"
        " %s)", (shop.community, week, shop.id, hook, status, error),
    )  # fmt: skip
