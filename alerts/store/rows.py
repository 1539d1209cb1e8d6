"""Rows <-> models: the columns the API selects and the models it returns, made from the tables' declarations
in ``alerts.store.schema``; and, for the busiest route, the alert as JSON made by PostgreSQL (``ALERT_JSON``).

An alert as stored is the wire ``Alert`` plus what only the centre knows: who
was on duty for its grid when it was raised.

Example:
    >>> from alerts.core.models import EventKind, Place, Role
    >>> place = Place(sub_district="n", community="c", grid="g", site="s")
    >>> a = StoredAlert(kind=EventKind.FIRE, type="smoke", severity="critical", place=place, source="n1",
    ...                 route=Role.FIRE, dedup_key="s//fire/smoke", on_duty="Li Wei")
    >>> a.on_duty, a.route
    ('Li Wei', <Role.FIRE: 'fire'>)
    >>> from operator import attrgetter
    >>> row_to_alert([attrgetter(c.field)(a) for c in ALERTS.read]) == a
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from alerts.store.schema import ALERTS, Column, StoredAlert, Table, select_list

__all__ = ["ALERT_COLUMNS", "ALERT_JSON", "M", "StoredAlert", "row_to_alert", "rows_as"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

ALERT_COLUMNS = select_list(ALERTS.read, "a")
"""Every column of a StoredAlert, from alias ``a``, the id first."""
_read_alert = ALERTS.reader(ALERTS.read, StoredAlert)


def row_to_alert(row: Sequence[Any]) -> StoredAlert:
    """A StoredAlert from a row selected with ALERT_COLUMNS (in that order)."""
    return _read_alert(row)


def _json_value(column: Column, alias: str) -> str:
    """A column as ``model_dump_json`` writes its field: a time in UTC, "Z", its microseconds only when not zero
    (as pydantic writes them); anything else as PostgreSQL's JSON of it (text, numbers, booleans, arrays, jsonb)."""
    value = f"{alias}.{column.name}"
    if column.type != "timestamp with time zone":
        return value
    return f"""replace(to_char({value} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')"""


def row_json(table: Table, alias: str) -> str:
    """A SQL expression (on ``alias``, a row of ``table``) giving the row's model as JSON text: the keys, their
    order and the values' JSON types of ``model_dump_json``, so the database writes the answer and Python only
    joins rows. A place is an object of its levels. jsonb values are as the database prints them (a space after
    ``:`` and ``,``; numbers as stored).

    >>> from alerts.store.schema import READINGS
    >>> row_json(READINGS, "r")[:48]
    '(SELECT row_to_json(j) FROM (SELECT r.id AS "id"'
    """
    parts = []
    for field in table.model.model_fields:  # every field: one the table does not store is a KeyError
        held = table.of([field])
        if held[0].field == field:
            parts.append(f'{_json_value(held[0], alias)} AS "{field}"')
        else:
            levels = ", ".join(f'{_json_value(c, alias)} AS "{c.field.split(".")[1]}"' for c in held)
            parts.append(f'(SELECT row_to_json(p) FROM (SELECT {levels}) p) AS "{field}"')
    return f"(SELECT row_to_json(j) FROM (SELECT {', '.join(parts)}) j)::text"


ALERT_JSON = row_json(ALERTS, "a")
"""A StoredAlert as JSON text (what ``model_dump_json`` writes, up to jsonb's spacing), from alias ``a``."""


def rows_as(model: type[M], rows: Iterable[Sequence[Any]]) -> list[M]:
    """Models from rows whose columns are the model's fields, in the model's order.

    >>> from alerts.core.models import Place
    >>> rows_as(Place, [("n", "c", "g", "s", None)])[0].site
    's'
    """
    return [model(**dict(zip(model.model_fields, row, strict=True))) for row in rows]
