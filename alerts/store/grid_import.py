"""Grids and their people imported from the districts' spreadsheets: CSV files and XLSX workbooks.

Each table (a CSV file, or a sheet of a workbook) has a header row, then one row per grid or per person; its
header says which: a table with a ``login`` column holds people, any other grids. One import may hold both (two
CSV files, or a workbook with a grids sheet and a people sheet); its grids are written first. Columns, in any
order, by their English or Chinese names (case and surrounding spaces do not matter):

=================  ==========  ===========================================================================
grids              中文         what
=================  ==========  ===========================================================================
grid               网格编号      the grid's id, as places name it (required)
community          社区          its community (required)
sub_district       街道          its sub-district (required)
name               网格名称      what people call it
addresses          地址          the addresses it covers, separated by ``;`` ``；`` ``、`` or line breaks
boundary           边界          a GeoJSON Polygon, as JSON text
=================  ==========  ===========================================================================

=================  ==========  ===========================================================================
people             中文         what
=================  ==========  ===========================================================================
login              账号          what they sign in with (required): lower-case letters, digits, ``._-``
name               姓名          full name (required)
phone              电话          how the desk reaches them
role               角色          grid_worker 网格员, police 民警, fire 消防, operator 运维, city_management 城管,
                                 traffic_police 交警 (required); an admin is added by ``patrolnet person add``
community          社区          their grid's community (required)
grid               网格编号      their grid (required): recorded already, or in this import
leader             组长          yes/no (是/否, 1/0, y/n, true/false; empty: no): leads the grid's team
on_duty            在岗          yes/no: on duty now (empty: unchanged, or no for someone new)
password           初始密码      a first password (12 characters or more); empty: an admin gives them one
                                 (``patrolnet person passwd LOGIN``) before they can sign in
=================  ==========  ===========================================================================

A person's scope is their grid (its sub-district, community and grid), and they belong to its team only (an
import moves them from another grid's). Importing again updates: a grid by (community, grid), a person by login
(their password and sessions stay; a changed role ends their sessions as ``patrolnet person`` does). Nobody is
removed.

Every row is checked before anything is written, and the whole import is one transaction: a file with a bad
row imports nothing, and ``ImportRefused`` lists every problem as ``file:line: field: why`` (``file[sheet]``
for a workbook; the header is line 1).

Example:
    >>> errors = []
    >>> csv_text = "账号,姓名,角色,社区,网格编号\\nli.wei,Li Wei,chef,east-gate,g07\\n"
    >>> tables = read_tables("people.csv", csv_text.encode(), errors)
    >>> tables[0].kind, tables[0].rows[0].line, tables[0].rows[0].values["role"]
    ('people', 2, 'chef')
    >>> _rows(PersonRow, tables[0], PERSON_CELLS, errors), errors  # doctest: +ELLIPSIS
    ([], ["people.csv:2: role: unknown role 'chef'; one of grid_worker, police, ..."])
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from psycopg import AsyncConnection
from pydantic import BaseModel, Field, ValidationError

from alerts.auth import Principal
from alerts.core.models import Role
from alerts.store import grids, people
from alerts.store.grids import GridIn
from alerts.store.people import LOGIN_PATTERN, UNSCOPED, PersonChange, PersonIn

log = logging.getLogger(__name__)

MAX_ROWS = 20_000
"""Rows of one import at most: a district's lists, with room."""

COLUMNS: dict[str, dict[str, str]] = {
    "grids": {
        "grid": "网格编号", "community": "社区", "sub_district": "街道", "name": "网格名称", "addresses": "地址",
        "boundary": "边界",
    },
    "people": {
        "login": "账号", "name": "姓名", "phone": "电话", "role": "角色", "community": "社区", "grid": "网格编号",
        "leader": "组长", "on_duty": "在岗", "password": "初始密码",
    },
}  # fmt: skip
"""Each kind of table's columns: English name, Chinese name."""
REQUIRED = {"grids": ("grid", "community", "sub_district"), "people": ("login", "name", "role", "community", "grid")}
MORE_NAMES = {"网格": "grid", "名称": "name", "登录名": "login", "手机": "phone", "密码": "password", "值班": "on_duty"}
"""Other Chinese headers seen in districts' sheets."""

ROLE_NAMES: dict[str, Role] = {
    "网格员": Role.GRID_WORKER, "民警": Role.POLICE, "警察": Role.POLICE, "消防": Role.FIRE, "运维": Role.OPERATOR,
    "城管": Role.CITY_MANAGEMENT, "交警": Role.TRAFFIC_POLICE,
}  # fmt: skip
IMPORT_ROLES = (Role.GRID_WORKER, Role.POLICE, Role.FIRE, Role.OPERATOR, Role.CITY_MANAGEMENT, Role.TRAFFIC_POLICE)
"""The roles an import gives: an admin signs in with TOTP, whose secret ``patrolnet person add`` shows once."""
YES = {"yes", "y", "true", "1", "是", "√"}
NO = {"no", "n", "false", "0", "否", ""}
ADDRESS_SEPARATORS = re.compile(r"[;；、\n]+")


class ImportRefused(ValueError):
    """An import refused: nothing was written. ``errors``: each problem, as ``file:line: field: why``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} problem(s), nothing imported: " + "; ".join(errors[:20]))
        self.errors = errors


class ImportResult(BaseModel):
    grids_added: int = Field(description="Grids recorded for the first time.")
    grids_changed: int = Field(description="Grids recorded before, their records replaced.")
    people_added: int = Field(description="People added.")
    people_changed: int = Field(description="People known before whose fields or grid changed.")
    need_password: list[str] = Field(description="Logins of people added without a password: an admin sets one.")


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]


@dataclass
class Table:
    """One CSV file or one sheet: its kind (grids or people), where it came from, and its rows."""

    source: str
    kind: str
    rows: list[Row] = field(default_factory=list)

    def where(self, line: int) -> str:
        return f"{self.source}:{line}"


def _column(header: str, kind: str) -> str | None:
    name = header.strip().lower().replace(" ", "_")
    for english, chinese in COLUMNS[kind].items():
        if name in (english, chinese):
            return english
    found = MORE_NAMES.get(header.strip())
    return found if found in COLUMNS[kind] else None


def _cell(value: Any) -> str:
    """A cell as text: a whole number without ``.0`` (a phone number or a grid's number typed as a number)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _table(source: str, lines: Sequence[tuple[int, Sequence[Any]]], errors: list[str]) -> Table | None:
    """A table of ``lines`` (line number, cells), the first the header; None when it is empty."""
    if not lines:
        return None
    header = [_cell(c) for c in lines[0][1]]
    kind = "people" if any(_column(h, "people") == "login" for h in header) else "grids"
    table = Table(source, kind)
    columns = [_column(h, kind) for h in header]
    where = table.where(lines[0][0])
    for name, column in zip(header, columns, strict=True):
        if name and column is None:
            known = ", ".join(f"{e} ({c})" for e, c in COLUMNS[kind].items())
            errors.append(f"{where}: unknown column {name!r} in a {kind} table; the columns: {known}")
    missing = [c for c in REQUIRED[kind] if c not in columns]
    if missing:
        errors.append(f"{where}: no {', '.join(missing)} column in a {kind} table")
    for line, cells in lines[1:]:
        values = {c: _cell(v) for c, v in zip(columns, cells, strict=False) if c is not None}
        if any(values.values()):
            table.rows.append(Row(line, values))
    return table


def _csv_lines(data: bytes) -> list[tuple[int, list[str]]]:
    # Excel writes CSV as UTF-8 with a BOM, or in a Chinese Windows' own code page (GB18030 covers GBK).
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030")
    reader = csv.reader(io.StringIO(text, newline=""))
    lines, start = [], 1
    for cells in reader:
        lines.append((start, cells))
        start = reader.line_num + 1  # a quoted cell may span lines: a row is numbered by its first
    return lines


def _xlsx_sheets(name: str, data: bytes) -> list[tuple[str, list[tuple[int, tuple[Any, ...]]]]]:
    from openpyxl import load_workbook  # loaded by the first workbook: the API and the commands start without it

    workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sheets = []
    try:  # the sheets are read here: a broken part shows only now
        for sheet in workbook.worksheets:
            # No further than the rows an import may have: a small file may unpack to a huge one.
            rows = list(islice(sheet.iter_rows(values_only=True), MAX_ROWS + 2))
            if len(rows) > MAX_ROWS + 1:
                raise ImportRefused([f"{name}[{sheet.title}]: more than {MAX_ROWS} rows: import it in parts"])
            sheets.append((sheet.title, [(n, row) for n, row in enumerate(rows, 1) if any(row)]))
    finally:
        workbook.close()
    return sheets


def read_tables(name: str, data: bytes, errors: list[str]) -> list[Table]:
    """The tables of a file: a CSV file is one, a workbook (``.xlsx``, or any file that is a ZIP) one per sheet
    that is not empty. What cannot be read goes to ``errors``."""
    tables: list[Table | None] = []
    if name.lower().endswith(".xlsx") or data[:4] == b"PK\x03\x04":
        try:
            sheets = _xlsx_sheets(name, data)
        except ImportRefused as exc:
            errors += exc.errors
        except Exception as exc:  # whatever a broken file makes openpyxl raise, the file is the sender's
            errors.append(f"{name}: not an XLSX workbook ({type(exc).__name__}: {exc})")
        else:
            tables = [_table(f"{name}[{title}]", lines, errors) for title, lines in sheets]
    else:
        try:
            tables = [_table(name, _csv_lines(data), errors)]
        except (UnicodeDecodeError, csv.Error) as exc:
            errors.append(f"{name}: not a CSV file in UTF-8 or GB18030 ({exc})")
    return [t for t in tables if t is not None]


# Rows checked


class PersonRow(BaseModel):
    """A person's row, checked."""

    login: str = Field(pattern=LOGIN_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    phone: str = Field(default="", max_length=40)
    role: Role
    community: str = Field(min_length=1, max_length=100)
    grid: str = Field(min_length=1, max_length=100)
    leader: bool = False
    on_duty: bool | None = None
    password: str | None = Field(default=None, min_length=12, max_length=256)


def _yes(value: str) -> bool:
    word = value.strip().lower()
    if word in YES or word in NO:
        return word in YES
    raise ValueError(f"{value!r} is not yes or no (是/否)")


def _role(value: str) -> Role:
    role = ROLE_NAMES.get(value) or next((r for r in IMPORT_ROLES if r.value == value.strip().lower()), None)
    if role is None:
        raise ValueError(f"unknown role {value!r}; one of {', '.join(IMPORT_ROLES)} ({', '.join(ROLE_NAMES)})")
    return role


M = TypeVar("M", bound=BaseModel)


def _checked(
    model: type[M], table: Table, row: Row, converters: dict[str, Callable[[str], Any]], errors: list[str]
) -> M | None:
    """The row as ``model`` (its cells through ``converters``; an empty cell is left out: the field's default),
    or None with each field's problem, once, in ``errors``."""
    values: dict[str, Any] = {}
    failed = set()
    for name, value in row.values.items():
        try:
            if value != "":
                values[name] = converters[name](value) if name in converters else value
        except ValueError as exc:
            errors.append(f"{table.where(row.line)}: {name}: {exc}")
            failed.add(name)
    try:
        return None if failed else model.model_validate(values)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(str(part) for part in e["loc"]) or "row"
            errors.append(f"{table.where(row.line)}: {where}: {e['msg']}")
        return None


def _addresses(value: str) -> list[str]:
    return [a.strip() for a in ADDRESS_SEPARATORS.split(value) if a.strip()]


def _boundary(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from exc


def _rows(
    model: type[M], table: Table, converters: dict[str, Callable[[str], Any]], errors: list[str]
) -> list[tuple[Row, M]]:
    checked = [(row, _checked(model, table, row, converters, errors)) for row in table.rows]
    return [(row, value) for row, value in checked if value is not None]


def _outside(who: Principal, place: dict[str, Any]) -> str | None:
    for level, value in who.scope.items():
        if place.get(level) != value:
            return f"outside your scope ({level} {value!r})"
    return None


GRID_CELLS: dict[str, Callable[[str], Any]] = {"addresses": _addresses, "boundary": _boundary}
PERSON_CELLS: dict[str, Callable[[str], Any]] = {"role": _role, "leader": _yes, "on_duty": _yes}


@dataclass
class Plan:
    """What an import will write, every row checked: grids, and people with their grid's sub-district and where
    their row is."""

    grids: list[GridIn] = field(default_factory=list)
    people: list[tuple[PersonRow, str, str]] = field(default_factory=list)
    refused_grids: set[str] = field(default_factory=set)  # of rows refused: their people are not refused again


async def _check_grids(conn: AsyncConnection, who: Principal, tables: list[Table], errors: list[str]) -> Plan:
    """The grids of ``tables``, checked: a plan with its grids, each problem in ``errors``."""
    result = Plan()
    recorded = await grids.grid_places(conn)
    seen: dict[tuple[str, str], str] = {}
    for table in (t for t in tables if t.kind == "grids"):
        checked = _rows(GridIn, table, GRID_CELLS, errors)
        lines = {row.line for row, _ in checked}
        result.refused_grids |= {r.values.get("grid", "") for r in table.rows if r.line not in lines}
        for row, grid in checked:
            key, where = (grid.community, grid.grid), table.where(row.line)
            # A grid recorded before must lie within the caller's scope too, where it is now.
            before = {"sub_district": recorded.get(key, grid.sub_district), "community": grid.community,
                      "grid": grid.grid}  # fmt: skip
            refused = _outside(who, grid.model_dump()) or _outside(who, before)
            if key in seen:
                errors.append(f"{where}: grid: {grid.community}/{grid.grid} is on {seen[key]} too")
            elif refused is not None:
                errors.append(f"{where}: grid: {refused}")
            seen[key] = where
            result.grids.append(grid)
    return result


async def plan(conn: AsyncConnection, who: Principal, tables: list[Table]) -> Plan:
    """Checks every row of ``tables`` against each other, the recorded grids and people, and the caller's scope;
    ImportRefused with every problem, else what to write."""
    if sum(len(t.rows) for t in tables) > MAX_ROWS:
        raise ImportRefused([f"more than {MAX_ROWS} rows: import the district in parts"])
    errors: list[str] = []
    result = await _check_grids(conn, who, tables, errors)
    places = await grids.grid_places(conn)
    places |= {(g.community, g.grid): g.sub_district for g in result.grids}
    logins: dict[str, str] = {}
    leaders: dict[tuple[str, str], str] = {}
    for table in (t for t in tables if t.kind == "people"):
        for row, person in _rows(PersonRow, table, PERSON_CELLS, errors):
            key, where = (person.community, person.grid), table.where(row.line)
            if person.login in logins:
                errors.append(f"{where}: login: {person.login!r} is on {logins[person.login]} too")
            logins[person.login] = where
            if person.leader and key in leaders:
                errors.append(f"{where}: leader: {key[0]}/{key[1]} has a leader on {leaders[key]} already")
            if person.leader:
                leaders.setdefault(key, where)
            sub_district = places.get(key)
            if sub_district is None:
                if person.grid not in result.refused_grids:  # else its grid's row was refused, and says why
                    errors.append(f"{where}: grid: no grid {person.grid!r} in community {person.community!r}, "
                                  "recorded or in this import")  # fmt: skip
                continue
            place = {"sub_district": sub_district, "community": person.community, "grid": person.grid}
            known = await people.find_person(conn, UNSCOPED, login=person.login)
            if (refused := _outside(who, place)) is not None:
                errors.append(f"{where}: grid: {refused}")
            elif known is not None and await people.find_person(conn, who, known.id) is None:
                errors.append(f"{where}: login: {person.login!r} is someone's outside your scope")
            result.people.append((person, sub_district, where))
    if errors:
        raise ImportRefused(errors)
    return result


async def _write_person(conn: AsyncConnection, person: PersonRow, sub_district: str) -> tuple[bool, bool]:
    """Adds or updates the person and their place in the grid's team; (added, changed)."""
    scope = {"sub_district": sub_district, "community": person.community, "grid": person.grid, "site": None}
    fields: dict[str, Any] = {"name": person.name, "phone": person.phone, "role": person.role, **scope}
    if person.on_duty is not None:
        fields["on_duty"] = person.on_duty
    known = await people.find_person(conn, UNSCOPED, login=person.login)
    if known is None:
        password = person.password or secrets.token_urlsafe(24)  # nobody knows it: an admin sets one
        added, _ = await people.add_person(conn, PersonIn(login=person.login, password=password, **fields))
        person_id, changed = added.id, False
    else:
        different = {k: v for k, v in fields.items() if getattr(known, k) != v}
        if different:
            await people.change_person(conn, known.id, PersonChange(**different))
        person_id, changed = known.id, bool(different)
    team = await grids.team(conn, person.community, person.grid)
    mine = next((m for m in team.members if m.person_id == person_id), None)
    if mine is None or mine.leader != person.leader:
        await grids.set_member(conn, person.community, person.grid, person_id, person.leader)
        changed = changed or known is not None
    return known is None, changed


async def import_tables(conn: AsyncConnection, who: Principal, tables: list[Table]) -> ImportResult:
    """Checks every row (``plan``), then writes grids and people in one transaction: all or nothing;
    ImportRefused lists every problem."""
    async with conn.transaction():
        todo = await plan(conn, who, tables)
        added_grids = [await grids.put_grid(conn, grid) for grid in todo.grids]
        outcome = []
        for person, sub_district, where in todo.people:
            try:
                outcome.append(await _write_person(conn, person, sub_district))
            except ValueError as exc:  # a login taken meanwhile; pydantic's ValidationError is one too
                raise ImportRefused([f"{where}: {exc}"]) from exc
    added_people = [p.login for (p, _, _), (added, _) in zip(todo.people, outcome, strict=True) if added]
    unset = {p.login for p, _, _ in todo.people if not p.password}
    result = ImportResult(
        grids_added=sum(added_grids),
        grids_changed=len(added_grids) - sum(added_grids),
        people_added=len(added_people),
        people_changed=sum(changed for _, changed in outcome),
        need_password=[login for login in added_people if login in unset],
    )
    log.info("%s imported %s", who.name, result.model_dump())
    return result


async def import_files(conn: AsyncConnection, who: Principal, files: list[tuple[str, bytes]]) -> ImportResult:
    """Reads (name, content) files and imports their tables (``import_tables``); ImportRefused with every
    problem of every file."""
    errors: list[str] = []

    def read() -> list[Table]:
        return [table for name, data in files for table in read_tables(name, data, errors)]

    tables = await asyncio.to_thread(read)  # a workbook takes a while: not on the event loop
    if errors:
        raise ImportRefused(errors)
    return await import_tables(conn, who, tables)
