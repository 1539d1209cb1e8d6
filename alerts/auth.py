"""Who calls: API keys (machines) and people (desks), and what each role may see.

A key is shown once when it is made and stored only as its SHA-256 hash. A
person signs in with a password (argon2id, OWASP's parameters) and, when a
TOTP secret is set (always for an admin), a code; the browser then holds a
session token, stored likewise only as its hash, and sends a CSRF token
(derived from the session token) with every change it makes. A principal has
a role, which limits the kinds of alert it sees, and a place scope (any prefix
of sub-district > community > grid > site), which limits where.

The roles of people besides the desks: a grid worker reads every kind of alert
within the grid of its scope and may acknowledge them (seen, someone is on it)
but not resolve or dismiss them; city management reads the enforcement alerts
(illegal parking, stalls and goods on the road, illegal building; the police no
longer get them) and traffic police the illegal parking ones, and both may act
on what they read and work their cases (``alerts.store.cases``).

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
import hmac
import logging
import secrets
import time
from enum import StrEnum
from uuid import UUID, uuid4

import psycopg
import pyotp
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
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
    Role.GRID_WORKER: tuple(EventKind),
    Role.CITY_MANAGEMENT: (EventKind.ENFORCEMENT,),
    Role.TRAFFIC_POLICE: (EventKind.ENFORCEMENT,),
}
"""The alert kinds each role may read."""

ROLE_TYPES: dict[Role, tuple[str, ...]] = {
    Role.TRAFFIC_POLICE: ("illegal_parking",),
}
"""Roles that read only these types of their kinds: traffic police, the parking among the enforcement alerts."""

COVERAGE_ROLES: frozenset[Role] = frozenset({Role.POLICE, Role.FIRE})
"""Roles that also read the trouble alerts naming them in ``notify``: coverage notices (alerts.coverage)."""

PLACE_LEVELS = ("sub_district", "community", "grid", "site")


class Permission(StrEnum):
    ALERTS = "alerts"  # read alerts of the role's kinds (list, one, stream, CAP, snapshots)
    ACKNOWLEDGE = "acknowledge"  # acknowledge an alert: seen, someone is on it
    ACT = "act"  # besides: resolve, mark false alarm, assign to a person
    DEVICES = "devices"  # devices and nodes with their health
    READINGS = "readings"  # sensor readings and hourly counts
    REPORT = "report"  # post citizen reports
    ADMIN = "admin"  # duty rotation, reporters, webhooks
    METRICS = "metrics"  # Prometheus metrics
    CLIPS = "clips"  # upload the video clips of alerts within the key's places (an edge node)


_DESK = {Permission.ALERTS, Permission.ACKNOWLEDGE, Permission.ACT, Permission.DEVICES}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.POLICE: frozenset(_DESK),
    Role.FIRE: frozenset({*_DESK, Permission.READINGS}),
    Role.OPERATOR: frozenset({*_DESK, Permission.READINGS, Permission.METRICS}),
    Role.ADMIN: frozenset(Permission) - {Permission.REPORT, Permission.CLIPS},
    Role.EDGE: frozenset({Permission.CLIPS}),  # nodes publish over MQTT; the key uploads clips
    Role.REPORTER: frozenset({Permission.REPORT}),
    Role.GRID_WORKER: frozenset({Permission.ALERTS, Permission.ACKNOWLEDGE, Permission.DEVICES}),
    Role.CITY_MANAGEMENT: frozenset({Permission.ALERTS, Permission.ACKNOWLEDGE, Permission.ACT}),
    Role.TRAFFIC_POLICE: frozenset({Permission.ALERTS, Permission.ACKNOWLEDGE, Permission.ACT}),
}
"""What each role may do besides reading its kinds."""

PERSON_ROLES = tuple(r for r in Role if r not in (Role.EDGE, Role.REPORTER))
"""The roles a person may have: machines (edge nodes, reporters' apps) have keys."""
TOTP_ROLES = frozenset({Role.ADMIN})
"""Roles whose people must sign in with a TOTP code besides the password."""


class Principal(BaseModel):
    """Who is calling: a role and the places it covers (None covers all at that level)."""

    name: str = Field(description="Who holds the key.")
    role: Role = Field(description="What the key may read and do.")
    sub_district: str | None = Field(default=None, description="Only this sub-district, if set.")
    community: str | None = Field(default=None, description="Only this community, if set.")
    grid: str | None = Field(default=None, description="Only this grid cell, if set.")
    site: str | None = Field(default=None, description="Only this site, if set.")
    key_id: UUID | None = Field(default=None, description="The key's id, when a key calls.")
    person_id: UUID | None = Field(default=None, description="The person's id, when a signed-in person calls.")
    session_id: UUID | None = Field(default=None, description="The person's session, when a person calls.")

    @property
    def kinds(self) -> tuple[EventKind, ...]:
        return ROLE_KINDS[self.role]

    @property
    def types(self) -> tuple[str, ...]:
        """The only alert types the role reads, or () for every type of its kinds."""
        return ROLE_TYPES.get(self.role, ())

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


# A key, or a reporter's phone link (alerts.store.phone_reports), which speaks as the reporter's key until either
# is revoked.
LOOKUP_SQL = """
WITH h AS (SELECT %s::text AS hash)
SELECT k.name, k.role, k.sub_district, k.community, k.grid, k.site, k.id FROM h JOIN api_keys k ON k.key_hash = h.hash
WHERE k.revoked_at IS NULL
UNION ALL
SELECT k.name, k.role, k.sub_district, k.community, k.grid, k.site, k.id FROM h
JOIN reporter_links l ON l.token_hash = h.hash JOIN reporters r ON r.id = l.reporter_id
JOIN api_keys k ON k.id = r.key_id WHERE l.revoked_at IS NULL AND k.revoked_at IS NULL"""


def principal_from_row(row: tuple) -> Principal:
    name, role, sub_district, community, grid, site, key_id = row
    return Principal(
        name=name, role=role, sub_district=sub_district, community=community, grid=grid, site=site, key_id=key_id
    )


# OWASP's first choice for argon2id: 19 MiB, 2 passes, one lane.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)
# Checked against when a login is unknown, so that the answer takes as long as for a known one.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
SESSION_COOKIE = "__Host-patrolnet-session"
CSRF_HEADER = "X-CSRF-Token"


def hash_password(password: str) -> str:
    """An argon2id hash of a password (PHC string: the parameters and salt travel with it)."""
    return _HASHER.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: an unknown login, checked against a dummy for even timing).

    >>> check_password(hash_password("correct horse"), "correct horse"), check_password(None, "x")
    (True, False)
    """
    try:
        return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(stored: str) -> bool:
    """Whether a hash was made with other parameters than today's."""
    return _HASHER.check_needs_rehash(stored)


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its token, so nothing more is stored, and telling nothing of it.

    >>> csrf_token("a") == csrf_token("a") != csrf_token("b")
    True
    """
    return hmac.new(session_token.encode(), b"patrolnet csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_token: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(session_token).encode(), sent.encode())


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, login: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name="patrolnet")


def totp_step(secret: str, code: str, after_step: int, at: float | None = None) -> int | None:
    """The time step a TOTP code belongs to (this one, or one either side for clock drift), if it is later than
    ``after_step``, the newest step used already: a code is good once. None when it does not match.

    >>> secret = new_totp_secret(); totp = pyotp.TOTP(secret); now = 1_700_000_000
    >>> step = totp_step(secret, totp.at(now), 0, now); step == now // 30
    True
    >>> totp_step(secret, totp.at(now), step, now), totp_step(secret, "12345", 0, now)
    (None, None)
    """
    totp = pyotp.TOTP(secret)
    now = int(at if at is not None else time.time())
    for step in (now // 30, now // 30 - 1, now // 30 + 1):
        if step > after_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
