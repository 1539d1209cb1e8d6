"""Rows <-> models: the columns the API selects and the models it returns.

An alert as stored is the wire ``Alert`` plus what only the centre knows: who
was on duty for its grid when it was raised.

Example:
    >>> from alerts.core.models import EventKind, Place, Role
    >>> place = Place(sub_district="n", community="c", grid="g", site="s")
    >>> a = StoredAlert(kind=EventKind.FIRE, type="smoke", severity="critical", place=place, source="n1",
    ...                 route=Role.FIRE, dedup_key="s//fire/smoke", on_duty="Li Wei")
    >>> a.on_duty, a.route
    ('Li Wei', <Role.FIRE: 'fire'>)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from alerts.core.models import Alert, Place

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class StoredAlert(Alert):
    """An alert as the store keeps it: the wire alert and the duty rotation's answer."""

    on_duty: str | None = Field(
        default=None, title="On duty", description="Who was on duty for the grid when the alert was raised."
    )
    on_duty_contact: str | None = Field(default=None, title="On-duty contact", description="How to reach them.")


ALERT_COLUMNS = (
    "a.id, a.ts, a.kind, a.type, a.severity, a.route, a.sub_district, a.community, a.grid, a.site, a.device,"
    " a.source, a.title, a.dedup_key, a.active, a.count, a.last_seen, a.cleared_at, a.revision,"
    " a.last_event_id, a.attributes, a.status, a.status_by, a.status_at, a.on_duty, a.on_duty_contact, a.notify,"
    " a.readings, a.confirmed, a.confirmed_by"
)


def row_to_alert(row: tuple[Any, ...]) -> StoredAlert:
    """A StoredAlert from a row selected with ALERT_COLUMNS (in that order)."""
    (
        id_, ts, kind, type_, severity, route, sub_district, community, grid, site, device, source, title,
        dedup_key, active, count, last_seen, cleared_at, revision, last_event_id, attributes, status, status_by,
        status_at, on_duty, on_duty_contact, notify, readings, confirmed, confirmed_by,
    ) = row  # fmt: skip
    return StoredAlert(
        id=id_, ts=ts, kind=kind, type=type_, severity=severity, route=route,
        place=Place(sub_district=sub_district, community=community, grid=grid, site=site, device=device),
        source=source, title=title, dedup_key=dedup_key, active=active, count=count, last_seen=last_seen,
        cleared_at=cleared_at, revision=revision, last_event_id=last_event_id, attributes=attributes,
        status=status, status_by=status_by, status_at=status_at, on_duty=on_duty, on_duty_contact=on_duty_contact,
        notify=notify, readings=readings, confirmed=confirmed, confirmed_by=confirmed_by,
    )  # fmt: skip


def rows_as(model: type[M], rows: Iterable[Sequence[Any]]) -> list[M]:
    """Models from rows whose columns are the model's fields, in the model's order.

    >>> rows_as(Place, [("n", "c", "g", "s", None)])[0].site
    's'
    """
    return [model(**dict(zip(model.model_fields, row, strict=True))) for row in rows]
