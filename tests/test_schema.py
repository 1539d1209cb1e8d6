"""The declared columns (alerts.store.schema) are the migrated tables', and every field makes the round trip.

A field added to a stored model without a migration, or a column a migration adds without a field (or a
``database_only`` entry), fails the first test; a field whose value the store writes or reads wrongly fails the
round trips.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from alerts.core.models import Alert, Event, EventKind, EventState, Place, Reading, Role, Severity
from alerts.store.database import WriteBatch, write_batch
from alerts.store.rows import ALERT_COLUMNS, ALERT_JSON, row_to_alert
from alerts.store.schema import ALERTS, EVENTS, READINGS, TABLES, Column, Table, select_list

PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="smoke-1")

_MIGRATED = """
SELECT column_name, udt_name::regtype::text, is_nullable = 'YES'
FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = %s"""


def one(conn: psycopg.Connection, sql: str) -> tuple[Any, ...]:
    """The one row a query returns; the test fails if it returns none."""
    row = conn.execute(sql).fetchone()
    assert row is not None, "the query returned no row"
    return row


def differences(conn: psycopg.Connection, table: Table) -> dict[str, tuple[Column | None, Column | None]]:
    """Column name -> (declared, migrated) for each column where the two differ (None: missing on that side)."""
    migrated = {name: Column(name, type_, nullable) for name, type_, nullable in conn.execute(_MIGRATED, (table.name,))}
    declared = {c.name: Column(c.name, c.type, c.nullable) for c in table.columns}
    return {
        name: (declared.get(name), migrated.get(name))
        for name in declared.keys() | migrated.keys()
        if declared.get(name) != migrated.get(name)
    }


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_the_declared_columns_are_the_migrated_ones(database_url: str, table: Table) -> None:
    with psycopg.connect(database_url) as conn:
        assert differences(conn, table) == {}


def test_a_field_without_a_migration_or_a_column_without_a_field_is_a_difference(database_url: str) -> None:
    class Wider(Reading):
        batch: str = ""

    with psycopg.connect(database_url, autocommit=True) as conn:
        assert differences(conn, Table("readings", Wider, key=("id", "ts"))) == {
            "batch": (Column("batch", "text", False), None)
        }
        conn.execute("ALTER TABLE readings ADD COLUMN batch text, ALTER COLUMN unit DROP NOT NULL")
        assert differences(conn, READINGS) == {
            "batch": (None, Column("batch", "text", True)),
            "unit": (Column("unit", "text", False), Column("unit", "text", True)),
        }


def _event() -> Event:
    """An event whose every stored field differs from its default."""
    return Event(
        ts=datetime(2024, 5, 1, 3, 4, 5, 123456, tzinfo=UTC),
        kind=EventKind.FIRE,
        type="smoke",
        state=EventState.UPDATE,
        severity=Severity.CRITICAL,
        place=PLACE,
        source="node-1",
        title="Smoke in stair B",
        test=True,
        attributes={"zone": "stair", "box": [1, 2, 3, 4]},
        snapshot=b"\xff\xd8\xff\xe0jpeg",
        readings={"smoke": 1.0, "temperature": 48.5},
        confirmed=True,
        confirmed_by=["smoke-1", "smoke-2"],
    )


def _alert(event: Event, **changes: Any) -> Alert:
    """An alert whose every field the edge writes differs from its default."""
    fields: dict[str, Any] = {
        "ts": event.ts,
        "kind": EventKind.TROUBLE,
        "type": "camera_offline",
        "severity": Severity.MINOR,
        "place": PLACE,
        "source": "node-1",
        "title": "Camera offline",
        "route": Role.OPERATOR,
        "dedup_key": "s/smoke-1/trouble/camera_offline/",
        "active": False,
        "count": 3,
        "last_seen": event.ts + timedelta(minutes=5),
        "cleared_at": event.ts + timedelta(minutes=6),
        "revision": 4,
        "last_event_id": event.id,
        "attributes": {"reconnects": 7},
        "notify": [Role.FIRE, Role.POLICE],
        "readings": {"battery": 12.0},
        "confirmed": False,
        "confirmed_by": ["smoke-1"],
    }
    return Alert.model_validate({**fields, **changes})


def test_every_field_of_an_event_and_an_alert_makes_the_round_trip(database_url: str) -> None:
    event = _event()
    alert = _alert(event)
    read_event = EVENTS.reader(EVENTS.read, Event)
    with psycopg.connect(database_url) as conn:
        write_batch(conn, WriteBatch(events=[event], alerts=[alert]))
        stored_event = read_event(one(conn, f"SELECT {select_list(EVENTS.read, 'e')} FROM events e"))
        stored = row_to_alert(one(conn, f"SELECT {ALERT_COLUMNS} FROM alerts a"))
    unstored = set(EVENTS.unstored)
    assert stored_event.model_dump(exclude=unstored) == event.model_dump(exclude=unstored)
    centre = set(ALERTS.centre_sets)
    assert stored.model_dump(exclude=centre) == alert.model_dump(exclude=centre)


def test_a_newer_copy_changes_all_but_what_the_alert_is(database_url: str) -> None:
    event = _event()
    first = _alert(event)
    newer = _alert(
        event,
        id=first.id,
        ts=first.ts + timedelta(hours=1),
        kind=EventKind.FIRE,
        type="smoke",
        route=Role.FIRE,
        source="node-2",
        dedup_key="other",
        place=PLACE.with_device("smoke-9"),
        severity=Severity.CRITICAL,
        title="Back",
        active=True,
        count=5,
        revision=5,
        attributes={},
        notify=[],
        readings={},
        confirmed=None,
        confirmed_by=[],
        cleared_at=None,
        last_event_id=uuid4(),
    )
    with psycopg.connect(database_url) as conn:
        write_batch(conn, WriteBatch(alerts=[first]))
        write_batch(conn, WriteBatch(alerts=[newer]))
        stored = row_to_alert(one(conn, f"SELECT {ALERT_COLUMNS} FROM alerts a"))
    identity = {"id", "ts", "kind", "type", "route", "source", "dedup_key", "place"}
    assert stored.model_dump(include=identity) == first.model_dump(include=identity)
    changed = set(Alert.model_fields) - identity - set(ALERTS.centre_sets)
    assert stored.model_dump(include=changed) == newer.model_dump(include=changed)


def _keys(value: Any) -> Any:
    """The keys of every object in a JSON value, in their order."""
    if isinstance(value, dict):
        return [(key, _keys(item)) for key, item in value.items()]
    return [_keys(item) for item in value] if isinstance(value, list) else None


def test_the_database_writes_an_alert_as_its_model_does(database_url: str) -> None:
    event = _event()
    whole = _alert(event)  # times with microseconds, every field set
    sparse = _alert(  # times on the second, nulls, text JSON must escape
        event,
        ts=datetime(2024, 5, 1, 3, 4, 5, tzinfo=UTC),
        title='Quote " backslash \\ newline \n tab \t bell \x07 café 火',
        cleared_at=None,
        last_event_id=None,
        confirmed=None,
        place=Place(sub_district="sd", community="c", grid="g", site="s"),
        attributes={"nested": {"list": [1, "two", None, True]}, "empty": {}},
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        write_batch(conn, WriteBatch(alerts=[whole, sparse]))
        conn.execute(
            "UPDATE alerts SET status = 'acknowledged', status_by = 'desk', status_at = '2024-05-01T04:00:00Z',"
            " on_duty = 'Li Wei', on_duty_contact = '+86 1' WHERE id = %s",
            (sparse.id,),
        )
        stored = {a.id: a for a in map(row_to_alert, conn.execute(f"SELECT {ALERT_COLUMNS} FROM alerts a"))}
        conn.execute("SET TIME ZONE 'Asia/Shanghai'")  # the JSON's times are UTC whatever the session's zone
        written: dict[UUID, str] = dict(conn.execute(f"SELECT a.id, {ALERT_JSON} FROM alerts a").fetchall())
    assert stored[sparse.id].status_at == datetime(2024, 5, 1, 4, tzinfo=UTC)
    for alert_id, model in stored.items():
        expected, got = json.loads(model.model_dump_json()), json.loads(written[alert_id])
        assert got == expected
        assert _keys(got) == _keys(expected)  # the same keys in the same order, the place's too
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
