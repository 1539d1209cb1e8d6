"""Alert filters: what a caller asks for, narrowed to what its role and places allow.

Every value is a bound parameter; only fixed column names are ever put in SQL text.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from alerts.auth import COVERAGE_ROLES, PLACE_LEVELS, Principal
from alerts.core.models import AlertStatus, EventKind, Severity


class GridFilter(BaseModel):
    """Place levels down to the grid; unknown query parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    sub_district: str | None = Field(default=None, description="Only this sub-district.")
    community: str | None = Field(default=None, description="Only this community.")
    grid: str | None = Field(default=None, description="Only this grid cell.")


class PlaceFilter(GridFilter):
    site: str | None = Field(default=None, description="Only this site.")


def check_order(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise ValueError("since must be before until")


class AlertFilter(PlaceFilter):
    """Query parameters shared by the alert list, the stream and the CAP feed."""

    kind: list[EventKind] = Field(default_factory=list, description="Only these kinds (repeatable).")
    status: list[AlertStatus] = Field(default_factory=list, description="Only these statuses (repeatable).")
    severity: list[Severity] = Field(default_factory=list, description="Only these severities (repeatable).")
    active: bool | None = Field(default=None, description="true: still going on; false: cleared.")
    device: str | None = Field(default=None, description="Only this device.")
    since: AwareDatetime | None = Field(default=None, description="Raised at or after this time (ISO 8601).")
    until: AwareDatetime | None = Field(default=None, description="Raised before this time (ISO 8601).")

    @model_validator(mode="after")
    def _range(self) -> AlertFilter:
        check_order(self.since, self.until)
        return self


class AlertPage(AlertFilter):
    limit: int = Field(default=100, ge=1, le=500, description="Alerts per page.")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")


class ForbiddenKind(ValueError):
    """A caller asked for kinds of alert its role may not read."""


def scope_clause(who: Principal, alias: str, levels: tuple[str, ...] = PLACE_LEVELS) -> tuple[list[str], list[Any]]:
    """Conditions (on ``alias``) keeping rows within the caller's places, at the levels the rows have.

    >>> scope_clause(Principal(name="d", role="fire", community="c1", site="s1"), "r", levels=PLACE_LEVELS[:3])
    (['r.community = %s'], ['c1'])
    """
    scope = {level: value for level, value in who.scope.items() if level in levels}
    return [f"{alias}.{level} = %s" for level in scope], list(scope.values())


def place_clause(flt: BaseModel, alias: str) -> tuple[list[str], list[Any]]:
    """Conditions for the place fields (any level, and device) that a filter sets."""
    clauses, params = [], []
    for column in (*PLACE_LEVELS, "device"):
        value = getattr(flt, column, None)
        if value is not None:
            clauses.append(f"{alias}.{column} = %s")
            params.append(value)
    return clauses, params


def kinds_allowed(kinds: list[EventKind], who: Principal) -> list[EventKind]:
    """The kinds to read: those asked for, else all the role reads; ForbiddenKind for others."""
    denied = [k for k in kinds if k not in who.kinds]
    if denied:
        raise ForbiddenKind(f"role {who.role} may not read {', '.join(denied)} alerts")
    return list(kinds or who.kinds)


def kind_clause(kinds: list[EventKind], who: Principal) -> tuple[str, list[Any]]:
    """The kinds condition (on alias ``a``): the kinds asked for, else all the role reads and, for a police or
    fire key, the coverage notices naming its role; ForbiddenKind for kinds the role may not read.

    >>> kind_clause([], Principal(name="d", role="fire"))
    ("(a.kind = ANY(%s) OR (a.kind = 'trouble' AND %s = ANY(a.notify)))", [[<EventKind.FIRE: 'fire'>], 'fire'])
    >>> kind_clause([], Principal(name="d", role="operator"))
    ('a.kind = ANY(%s)', [[<EventKind.TROUBLE: 'trouble'>]])
    """
    allowed = kinds_allowed(kinds, who)
    if kinds or who.role not in COVERAGE_ROLES:
        return "a.kind = ANY(%s)", [allowed]
    return "(a.kind = ANY(%s) OR (a.kind = 'trouble' AND %s = ANY(a.notify)))", [allowed, str(who.role)]


def where(flt: AlertFilter, who: Principal) -> tuple[str, list[Any]]:
    """The WHERE clause (on alias ``a``) and its parameters for a filter and a caller."""
    clause, params = kind_clause(flt.kind, who)
    clauses = [clause]
    if who.types:  # a role that reads only the enforcement alerts of its kinds
        clauses.append("a.type = ANY(%s)")
        params.append(list(who.types))
    for more, values in (scope_clause(who, "a"), place_clause(flt, "a")):
        clauses += more
        params += values
    for column in ("status", "severity"):
        values = getattr(flt, column)
        if values:
            clauses.append(f"a.{column} = ANY(%s)")
            params.append(list(values))
    if flt.active is not None:
        clauses.append("a.active = %s")
        params.append(flt.active)
    if flt.since is not None:
        clauses.append("a.ts >= %s")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append("a.ts < %s")
        params.append(flt.until)
    return " AND ".join(clauses), params


def encode_cursor(ts: datetime, id_: UUID) -> str:
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{id_}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """ValueError if the cursor was not made by encode_cursor."""
    try:
        ts, id_ = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(ts), UUID(id_)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("cursor is not one this API gave out") from exc


def scoped_where(
    who: Principal, flt: BaseModel | None, alias: str, levels: tuple[str, ...] = PLACE_LEVELS
) -> tuple[str, list[Any]]:
    """A WHERE clause (on ``alias``) for rows within the caller's scope and the filter's places."""
    clauses, params = scope_clause(who, alias, levels)
    if flt is not None:
        more, values = place_clause(flt, alias)
        clauses += more
        params += values
    return " AND ".join(clauses) or "TRUE", params
