"""The store: migrations, idempotent writes and the row <-> model mapping.

Every insert is keyed by the UUID given where the object was born, so a message
delivered twice makes one row. Alerts keep the copy with the highest revision,
and every change is appended to ``alert_changes`` in commit order, which is
what the SSE stream resumes from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from alerts.models import Alert, DeadLetter, Event, Place, Reading

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "alert_changes"
INSERT_CHANGE = "INSERT INTO alert_changes (alert_id, change) VALUES (%s, %s)"
CHANGES_LOCK = 0x70617472  # "patr": serialises alert_changes inserts so seq order is commit order
_MIGRATE_LOCK = 0x6D696772  # "migr": one migrator at a time, however many replicas start together


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("alerts.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def migrate(conninfo: str) -> list[str]:
    """Applies the migrations not yet applied, each in its own transaction; returns their names."""
    applied = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone():
                    continue
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                log.info("applied migration %s", name)
                applied.append(name)
    return applied


def _place_values(place: Place) -> tuple[str, str, str, str, str | None]:
    return (place.sub_district, place.community, place.grid, place.site, place.device)


@dataclass
class Batch:
    """What one transaction writes."""

    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.alerts) + len(self.readings) + len(self.dead_letters)


_INSERT_EVENT = """
INSERT INTO events (id, ts, kind, type, state, severity, sub_district, community, grid, site, device,
                    source, title, attributes)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""

_INSERT_READING = """
INSERT INTO readings (id, ts, sub_district, community, grid, site, device, quantity, value, unit)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""

_INSERT_DEAD_LETTER = """
INSERT INTO dead_letters (id, ts, topic, payload, reason, source) VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING"""

# Desks own status; the edge owns the rest. A late, older copy changes nothing.
_UPSERT_ALERT = """
INSERT INTO alerts (id, ts, kind, type, severity, route, sub_district, community, grid, site, device, source,
                    title, dedup_key, active, count, last_seen, cleared_at, revision, last_event_id, attributes)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    severity = EXCLUDED.severity, title = EXCLUDED.title, active = EXCLUDED.active, count = EXCLUDED.count,
    last_seen = EXCLUDED.last_seen, cleared_at = EXCLUDED.cleared_at, revision = EXCLUDED.revision,
    last_event_id = EXCLUDED.last_event_id, attributes = EXCLUDED.attributes, updated_at = now()
WHERE alerts.revision < EXCLUDED.revision
RETURNING id, (xmax = 0) AS inserted, active"""


def _alert_change(inserted: bool, active: bool) -> str:
    if inserted:
        return "raised"
    return "updated" if active else "cleared"


def write_batch(conn: psycopg.Connection, batch: Batch) -> int:
    """Writes a batch in the caller's transaction; returns how many alert changes it logged."""
    with conn.cursor() as cur:
        if batch.events:
            cur.executemany(
                _INSERT_EVENT,
                [
                    (
                        e.id,
                        e.ts,
                        e.kind,
                        e.type,
                        e.state,
                        e.severity,
                        *_place_values(e.place),
                        e.source,
                        e.title,
                        Jsonb(e.attributes),
                    )
                    for e in batch.events
                ],
            )
        if batch.readings:
            cur.executemany(
                _INSERT_READING,
                [(r.id, r.ts, *_place_values(r.place), r.quantity, r.value, r.unit) for r in batch.readings],
            )
        if batch.dead_letters:
            cur.executemany(
                _INSERT_DEAD_LETTER,
                [(d.id, d.ts, d.topic, d.payload, d.reason, d.source) for d in batch.dead_letters],
            )
        changes = []
        for a in sorted(batch.alerts, key=lambda a: a.revision):
            row = cur.execute(
                _UPSERT_ALERT,
                (
                    a.id,
                    a.ts,
                    a.kind,
                    a.type,
                    a.severity,
                    a.route,
                    *_place_values(a.place),
                    a.source,
                    a.title,
                    a.dedup_key,
                    a.active,
                    a.count,
                    a.last_seen,
                    a.cleared_at,
                    a.revision,
                    a.last_event_id,
                    Jsonb(a.attributes),
                ),
            ).fetchone()
            if row is not None:
                changes.append((row[0], _alert_change(row[1], row[2])))
        if changes:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGES_LOCK,))
            cur.executemany(INSERT_CHANGE, changes)
            cur.execute(f"NOTIFY {CHANGES_CHANNEL}")
    return len(changes)


ALERT_COLUMNS = (
    "a.id, a.ts, a.kind, a.type, a.severity, a.route, a.sub_district, a.community, a.grid, a.site, a.device,"
    " a.source, a.title, a.dedup_key, a.active, a.count, a.last_seen, a.cleared_at, a.revision,"
    " a.last_event_id, a.attributes, a.status, a.status_by, a.status_at"
)


def row_to_alert(row: tuple[Any, ...]) -> Alert:
    """An Alert from a row selected with ALERT_COLUMNS (in that order)."""
    (
        id_,
        ts,
        kind,
        type_,
        severity,
        route,
        sub_district,
        community,
        grid,
        site,
        device,
        source,
        title,
        dedup_key,
        active,
        count,
        last_seen,
        cleared_at,
        revision,
        last_event_id,
        attributes,
        status,
        status_by,
        status_at,
    ) = row
    return Alert(
        id=id_, ts=ts, kind=kind, type=type_, severity=severity, route=route,
        place=Place(sub_district=sub_district, community=community, grid=grid, site=site, device=device),
        source=source, title=title, dedup_key=dedup_key, active=active, count=count, last_seen=last_seen,
        cleared_at=cleared_at, revision=revision, last_event_id=last_event_id, attributes=attributes,
        status=status, status_by=status_by, status_at=status_at,
    )  # fmt: skip
