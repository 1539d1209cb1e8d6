"""The columns of the stored objects' tables, declared once: the fields of the models they store.

A column of ``events``, ``alerts``, ``readings`` and ``dead_letters`` is a field of the model its table holds,
the place flattened into its levels (``sub_district``, ``community``, ``grid``, ``site``, ``device``), a dict
as ``jsonb`` and a list as ``text[]``; a field that may be None is a nullable column. What a table has besides,
or lacks, is said in its ``Table`` below. The store's INSERTs and the alerts upsert, the SELECT lists and the
row readers are made from these declarations, and ``tests/test_schema.py`` checks them against the migrated
database, so adding a field is: the model's field, a migration, a test.

Example:
    >>> [c.name for c in READINGS.columns]
    ['id', 'ts', 'sub_district', 'community', 'grid', 'site', 'device', 'quantity', 'value', 'unit']
    >>> [(c.name, c.type, c.nullable, c.field) for c in ALERTS.columns if c.name in ("device", "notify")]
    [('device', 'text', True, 'place.device'), ('notify', 'text[]', False, 'notify')]
    >>> select_list(EVENTS.of(["id", "place"]), "e")
    'e.id, e.sub_district, e.community, e.grid, e.site, e.device'
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from operator import attrgetter, itemgetter
from typing import Any, TypeVar, Union, cast, get_args, get_origin
from uuid import UUID

from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, BaseModel, Field

from alerts.core.models import Alert, DeadLetter, Event, Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

_TYPES: dict[type, str] = {
    UUID: "uuid",
    AwareDatetime: "timestamp with time zone",
    datetime: "timestamp with time zone",
    bool: "boolean",  # before int: a bool is an int
    int: "integer",
    float: "double precision",
    str: "text",  # an enum of strings too
    bytes: "bytea",
}
"""PostgreSQL's name (as ``format_type`` writes it) of the column holding each Python type."""


class StoredAlert(Alert):
    """An alert as the store keeps it: the wire alert, the duty rotation's answer and the person it is assigned to."""

    on_duty: str | None = Field(
        default=None, title="On duty", description="Who was on duty for the grid when the alert was raised."
    )
    on_duty_contact: str | None = Field(default=None, title="On-duty contact", description="How to reach them.")
    assignee: str | None = Field(default=None, title="Assignee", description="The person it is assigned to.")
    assignee_id: UUID | None = Field(default=None, title="Assignee id", description="That person's id.")


@dataclass(frozen=True)
class Column:
    """One column: its name, PostgreSQL type, whether it may be null, and the model field it holds (dotted for a
    place level, e.g. ``place.site``; empty for a column only the database fills)."""

    name: str
    type: str
    nullable: bool
    field: str = ""


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether None was allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(kept) == 1:
            return kept[0], True
    return annotation, False


def sql_type(annotation: Any) -> str:
    """The column type of a field's type.

    >>> sql_type(dict[str, float]), sql_type(list[str]), sql_type(bool), sql_type(AwareDatetime)
    ('jsonb', 'text[]', 'boolean', 'timestamp with time zone')
    """
    origin = get_origin(annotation)
    if origin is dict:
        return "jsonb"
    if origin is list:
        return sql_type(get_args(annotation)[0]) + "[]"
    for python, sql in _TYPES.items():
        if isinstance(annotation, type) and issubclass(annotation, python):
            return sql
    raise TypeError(f"no column type for {annotation!r}: map it in alerts/store/schema.py")


def model_columns(model: type[BaseModel], unstored: Iterable[str] = ()) -> list[Column]:
    """A column per field of ``model`` but ``unstored``; a field that is itself a model (the place) is a column per
    field of its own."""
    columns = []
    for name, info in model.model_fields.items():
        if name in unstored:
            continue
        annotation, nullable = _unwrap(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            columns += [
                Column(c.name, c.type, nullable or c.nullable, f"{name}.{c.field}") for c in model_columns(annotation)
            ]
        else:
            columns.append(Column(name, sql_type(annotation), nullable, name))
    return columns


@dataclass(frozen=True)
class Table:
    """A table that stores a model: its columns are the model's fields, but ``unstored``, and ``database_only``
    (columns no model field holds: filled by their default). ``centre_sets``: fields the centre writes by
    statements of its own (a desk's status, who is on duty), never from the model. ``key``: the primary key,
    whose columns come first."""

    name: str
    model: type[BaseModel]
    key: tuple[str, ...]
    unstored: tuple[str, ...] = ()
    database_only: tuple[Column, ...] = ()
    centre_sets: tuple[str, ...] = ()

    @cached_property
    def read(self) -> tuple[Column, ...]:
        """The columns that hold the model's fields, the key first."""
        columns = model_columns(self.model, self.unstored)
        return tuple(sorted(columns, key=lambda c: c.name not in self.key))

    @cached_property
    def columns(self) -> tuple[Column, ...]:
        """Every column of the table."""
        return self.read + self.database_only

    @cached_property
    def written(self) -> tuple[Column, ...]:
        """The columns written from a model."""
        return tuple(c for c in self.read if c.field.split(".")[0] not in self.centre_sets)

    def of(self, fields: Iterable[str]) -> tuple[Column, ...]:
        """The columns holding these fields, in their order (a place is its levels).

        >>> [c.name for c in READINGS.of(["value", "place"])]
        ['value', 'sub_district', 'community', 'grid', 'site', 'device']
        """
        found = []
        for field in fields:
            held = [c for c in self.read if c.field.split(".")[0] == field]
            if not held:
                raise KeyError(f"{self.name} has no column for {field!r}")
            found += held
        return tuple(found)

    def reader(self, columns: Sequence[Column], build: Callable[..., T]) -> Callable[[Sequence[Any]], T]:
        """A function building ``build(**fields)`` from a row of ``columns`` (of this table), the place's levels made
        a Place again. A pydantic ``build`` validates the fields as one dict, the place among them: the list route
        reads a row per alert, and that is as fast as the hand-written reader was.

        >>> read = READINGS.reader(READINGS.of(["quantity", "place"]), dict)
        >>> read(("t", "n", "c", "g", "s", None))["place"]
        Place(sub_district='n', community='c', grid='g', site='s', device=None)
        >>> READINGS.reader(READINGS.read, Reading)(("9b5cd7aa-3ee3-4cbc-a0e4-a8c9b1d3e5f7", "2024-05-01T00:00Z",
        ...     "n", "c", "g", "s", "t-1", "temperature", 21.5, "°C")).place.device
        't-1'
        """
        paths = [c.field.split(".") for c in columns]
        top = [i for i, path in enumerate(paths) if len(path) == 1]
        top_names, top_values = [paths[i][0] for i in top], _picker(top)
        validated = isinstance(build, type) and issubclass(build, BaseModel)
        nested = []
        for parent in dict.fromkeys(path[0] for path in paths if len(path) == 2):
            model = _unwrap(self.model.model_fields[parent].annotation)[0]
            at = [i for i, path in enumerate(paths) if len(path) == 2 and path[0] == parent]
            nested.append((parent, None if validated else model.model_validate, [paths[i][1] for i in at], _picker(at)))
        make: Callable[[dict[str, Any]], T] = (
            cast(Callable[[dict[str, Any]], T], cast(type[BaseModel], build).model_validate)
            if validated
            else lambda values: build(**values)
        )

        def read(row: Sequence[Any]) -> T:
            values = dict(zip(top_names, top_values(row), strict=True))
            for parent, validate, names, picked in nested:
                part = dict(zip(names, picked(row), strict=True))
                values[parent] = part if validate is None else validate(part)
            return make(values)

        return read


def _picker(indices: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The items at ``indices`` of a row, as a tuple (``itemgetter`` gives one item bare)."""
    if len(indices) == 1:
        return lambda row: (row[indices[0]],)
    return itemgetter(*indices)


_RECEIVED_AT = Column("received_at", "timestamp with time zone", nullable=False)

EVENTS = Table(
    "events",
    Event,
    key=("id", "ts"),
    unstored=("subject", "condition"),  # parts of the dedup key the edge's policy uses; the alert keeps the key
    database_only=(_RECEIVED_AT,),
)
ALERTS = Table(
    "alerts",
    StoredAlert,
    key=("id",),
    database_only=(Column("updated_at", "timestamp with time zone", nullable=False),),
    centre_sets=("status", "status_by", "status_at", "on_duty", "on_duty_contact", "assignee", "assignee_id"),
)
READINGS = Table("readings", Reading, key=("id", "ts"))
DEAD_LETTERS = Table("dead_letters", DeadLetter, key=("id",), database_only=(_RECEIVED_AT,))
TABLES = (EVENTS, ALERTS, READINGS, DEAD_LETTERS)


def names(columns: Sequence[Column]) -> tuple[str, ...]:
    return tuple(c.name for c in columns)


def select_list(columns: Sequence[Column], alias: str) -> str:
    """The columns for a SELECT (or RETURNING) from ``alias``."""
    return ", ".join(f"{alias}.{c.name}" for c in columns)


def values_of(columns: Sequence[Column]) -> Callable[[BaseModel], tuple[Any, ...]]:
    """A function giving a model's values for ``columns``, in their order, as psycopg writes them.

    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s")
    >>> values_of(READINGS.of(["place", "value"]))(Reading(place=place, quantity="t", value=1.5))
    ('n', 'c', 'g', 's', None, 1.5)
    """
    get = attrgetter(*(c.field for c in columns))
    as_json = [i for i, c in enumerate(columns) if c.type == "jsonb"]
    if not as_json:
        return get

    def values(obj: BaseModel) -> tuple[Any, ...]:
        row = list(get(obj))
        for i in as_json:
            row[i] = Jsonb(row[i])
        return tuple(row)

    return values
