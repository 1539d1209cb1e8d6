"""Rows <-> models: the columns the API selects and the models it returns, made from the tables' declarations
in ``alerts.store.schema``.

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

from alerts.store.schema import ALERTS, StoredAlert, select_list

__all__ = ["ALERT_COLUMNS", "M", "StoredAlert", "row_to_alert", "rows_as"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

ALERT_COLUMNS = select_list(ALERTS.read, "a")
"""Every column of a StoredAlert, from alias ``a``, the id first."""
_read_alert = ALERTS.reader(ALERTS.read, StoredAlert)


def row_to_alert(row: Sequence[Any]) -> StoredAlert:
    """A StoredAlert from a row selected with ALERT_COLUMNS (in that order)."""
    return _read_alert(row)


def rows_as(model: type[M], rows: Iterable[Sequence[Any]]) -> list[M]:
    """Models from rows whose columns are the model's fields, in the model's order.

    >>> from alerts.core.models import Place
    >>> rows_as(Place, [("n", "c", "g", "s", None)])[0].site
    's'
    """
    return [model(**dict(zip(model.model_fields, row, strict=True))) for row in rows]
