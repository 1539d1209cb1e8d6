"""API keys and what each role may see.

A key is shown once when it is made and stored only as its SHA-256 hash. A
principal has a role, which limits the kinds of alert it sees, and a place
scope (any prefix of sub-district > community > grid > site), which limits
where.

Example:
    >>> p = Principal(name="desk", role=Role.FIRE, community="c1")
    >>> p.kinds
    (<EventKind.FIRE: 'fire'>,)
    >>> p.scope
    {'community': 'c1'}
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from uuid import uuid4

import psycopg
from pydantic import BaseModel

from alerts.models import EventKind, Role

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

PLACE_LEVELS = ("sub_district", "community", "grid", "site")


class Principal(BaseModel):
    """Who is calling: a role and the places it covers (None covers all at that level)."""

    name: str
    role: Role
    sub_district: str | None = None
    community: str | None = None
    grid: str | None = None
    site: str | None = None

    @property
    def kinds(self) -> tuple[EventKind, ...]:
        return ROLE_KINDS[self.role]

    @property
    def scope(self) -> dict[str, str]:
        return {level: getattr(self, level) for level in PLACE_LEVELS if getattr(self, level) is not None}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conninfo: str, principal: Principal) -> str:
    """Stores a new key for a principal and returns it; it cannot be read back later."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "INSERT INTO api_keys (id, name, key_hash, role, sub_district, community, grid, site)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (uuid4(), principal.name, hash_key(key), principal.role, principal.sub_district, principal.community,
             principal.grid, principal.site),
        )  # fmt: skip
    log.info("created %s key %r scoped to %s", principal.role, principal.name, principal.scope or "everywhere")
    return key


LOOKUP_SQL = (
    "SELECT name, role, sub_district, community, grid, site FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL"
)


def principal_from_row(row: tuple[str, ...]) -> Principal:
    name, role, sub_district, community, grid, site = row
    return Principal(name=name, role=role, sub_district=sub_district, community=community, grid=grid, site=site)
