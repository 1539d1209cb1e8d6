"""Alert filters: what a caller asks for, narrowed to what its role and places allow.

Every value is a bound parameter; only fixed column names are ever put in SQL text.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerts.auth import PLACE_LEVELS, Principal
from alerts.models import AlertStatus, EventKind, Severity


class AlertFilter(BaseModel):
    """Query parameters shared by the alert list and the alert stream; unknown ones are refused."""

    model_config = ConfigDict(extra="forbid")

    kind: list[EventKind] = Field(default_factory=list, description="Only these kinds (repeatable).")
    status: list[AlertStatus] = Field(default_factory=list, description="Only these statuses (repeatable).")
    severity: list[Severity] = Field(default_factory=list, description="Only these severities (repeatable).")
    active: bool | None = Field(default=None, description="true: still going on; false: cleared.")
    sub_district: str | None = Field(default=None, description="Only this sub-district.")
    community: str | None = Field(default=None, description="Only this community.")
    grid: str | None = Field(default=None, description="Only this grid cell.")
    site: str | None = Field(default=None, description="Only this site.")
    device: str | None = Field(default=None, description="Only this device.")
    since: AwareDatetime | None = Field(default=None, description="Raised at or after this time (ISO 8601).")
    until: AwareDatetime | None = Field(default=None, description="Raised before this time (ISO 8601).")


class AlertPage(AlertFilter):
    limit: int = Field(default=100, ge=1, le=500, description="Alerts per page.")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")


class ForbiddenKind(ValueError):
    """A caller asked for kinds of alert its role may not read."""


def where(flt: AlertFilter, who: Principal) -> tuple[str, list[Any]]:
    """The WHERE clause (on alias ``a``) and its parameters for a filter and a caller."""
    denied = [k for k in flt.kind if k not in who.kinds]
    if denied:
        raise ForbiddenKind(f"role {who.role} may not read {', '.join(denied)} alerts")
    clauses = ["a.kind = ANY(%s)"]
    params: list[Any] = [list(flt.kind or who.kinds)]
    for level, value in who.scope.items():
        clauses.append(f"a.{level} = %s")
        params.append(value)
    for column in (*PLACE_LEVELS, "device"):
        value = getattr(flt, column)
        if value is not None:
            clauses.append(f"a.{column} = %s")
            params.append(value)
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
