"""API keys and what each role may see.

A key is shown once when it is made and stored only as its SHA-256 hash. A
principal has a role, which limits the kinds of alert it sees, and a place
scope (any prefix of sub-district > community > grid > site), which limits
where.

A police or fire key also reads, as coverage notices, the trouble alerts that
name its role in ``notify`` (a device feeding its alarms is blind), and no
other trouble.

Besides kinds, a role grants permissions: reading sensor readings, device
health, acting on alerts, posting citizen reports, administration, metrics.

Example:
    >>> p = Principal(name="desk", role=Role.FIRE, community="c1")
    >>> p.kinds
    (<EventKind.FIRE: 'fire'>,)
    >>> p.scope
    {'community': 'c1'}
    >>> p.may(Permission.READINGS), p.may(Permission.ADMIN)
    (True, False)
    >>> from alerts.core.models import Place
    >>> p.covers(Place(sub_district="n", community="c1", grid="g", site="s")), p.covers(Place(sub_district="n",
    ...     community="c2", grid="g", site="s"))
    (True, False)
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from enum import StrEnum
from uuid import UUID, uuid4

import psycopg
from pydantic import BaseModel, Field

from alerts.core.models import EventKind, Place, Role

log = logging.getLogger(__name__)

KEY_PREFIX = "pn_"

ROLE_KINDS: dict[Role, tuple[EventKind, ...]] = {
    Role.POLICE: (EventKind.SECURITY, EventKind.REPORT),
    Role.FIRE: (EventKind.FIRE,),
    Role.OPERATOR: (EventKind.TROUBLE,),
    Role.ADMIN: tuple(EventKind),
    Role.EDGE: (),
    Role.REPORTER: (),
}
"""The alert kinds each role may read."""

COVERAGE_ROLES: frozenset[Role] = frozenset({Role.POLICE, Role.FIRE})
"""Roles that also read the trouble alerts naming them in ``notify``: coverage notices (alerts.coverage)."""

PLACE_LEVELS = ("sub_district", "community", "grid", "site")


class Permission(StrEnum):
    ALERTS = "alerts"  # read alerts of the role's kinds (list, one, stream, CAP, snapshots)
    ACT = "act"  # acknowledge, resolve, mark false alarm
    DEVICES = "devices"  # devices and nodes with their health
    READINGS = "readings"  # sensor readings and hourly counts
    REPORT = "report"  # post citizen reports
    ADMIN = "admin"  # duty rotation, reporters, webhooks
    METRICS = "metrics"  # Prometheus metrics


_DESK = {Permission.ALERTS, Permission.ACT, Permission.DEVICES}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.POLICE: frozenset(_DESK),
    Role.FIRE: frozenset({*_DESK, Permission.READINGS}),
    Role.OPERATOR: frozenset({*_DESK, Permission.READINGS, Permission.METRICS}),
    Role.ADMIN: frozenset(Permission) - {Permission.REPORT},
    Role.EDGE: frozenset(),  # nodes publish over MQTT; the key only answers whoami
    Role.REPORTER: frozenset({Permission.REPORT}),
}
"""What each role may do besides reading its kinds."""


class Principal(BaseModel):
    """Who is calling: a role and the places it covers (None covers all at that level)."""

    name: str = Field(description="Who holds the key.")
    role: Role = Field(description="What the key may read and do.")
    sub_district: str | None = Field(default=None, description="Only this sub-district, if set.")
    community: str | None = Field(default=None, description="Only this community, if set.")
    grid: str | None = Field(default=None, description="Only this grid cell, if set.")
    site: str | None = Field(default=None, description="Only this site, if set.")
    key_id: UUID | None = Field(default=None, description="The key's id.")

    @property
    def kinds(self) -> tuple[EventKind, ...]:
        return ROLE_KINDS[self.role]

    @property
    def scope(self) -> dict[str, str]:
        return {level: getattr(self, level) for level in PLACE_LEVELS if getattr(self, level) is not None}

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def covers(self, place: Place) -> bool:
        """Whether a place lies within this principal's scope."""
        return all(getattr(place, level) == value for level, value in self.scope.items())


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


INSERT_KEY_SQL = (
    "INSERT INTO api_keys (id, name, key_hash, role, sub_district, community, grid, site)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


def new_key(principal: Principal) -> tuple[str, tuple]:
    """A fresh key and the INSERT_KEY_SQL parameters that store its hash under a new key id."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    p = principal
    return key, (p.key_id or uuid4(), p.name, hash_key(key), p.role, p.sub_district, p.community, p.grid, p.site)


def create_key(conninfo: str, principal: Principal) -> str:
    """Stores a new key for a principal and returns it; it cannot be read back later."""
    key, params = new_key(principal)
    with psycopg.connect(conninfo) as conn:
        conn.execute(INSERT_KEY_SQL, params)
    log.info("created %s key %r scoped to %s", principal.role, principal.name, principal.scope or "everywhere")
    return key


LOOKUP_SQL = (
    "SELECT name, role, sub_district, community, grid, site, id FROM api_keys"
    " WHERE key_hash = %s AND revoked_at IS NULL"
)


def principal_from_row(row: tuple) -> Principal:
    name, role, sub_district, community, grid, site, key_id = row
    return Principal(
        name=name, role=role, sub_district=sub_district, community=community, grid=grid, site=site, key_id=key_id
    )
