"""The store on a real PostgreSQL: migrations, idempotent writes, newest alert copy wins."""

from __future__ import annotations

import psycopg

from alerts.models import Event, EventKind, EventState, Place, Reading
from alerts.policy import AlertPolicy
from alerts.store import Batch, migrate, migrations, write_batch
from alerts.writer import decode

PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="smoke-1")


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def write(url: str, batch: Batch) -> int:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        return write_batch(conn, batch)


def test_migrations_apply_once_and_repeat_as_no_ops(database_url: str) -> None:
    # The fixture has migrated already: a second run (another replica starting) changes nothing.
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in migrations()]
    assert len(versions) >= 2


def test_the_same_message_written_twice_is_one_row(database_url: str) -> None:
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    alert = AlertPolicy().apply(event)
    reading = Reading(place=PLACE, quantity="temperature", value=21.5, unit="°C")
    batch = Batch(events=[event], alerts=[alert], readings=[reading])
    assert write(database_url, batch) == 1
    assert write(database_url, batch) == 0
    for table in ("events", "alerts", "readings", "alert_changes"):
        assert count(database_url, table) == 1, table


def test_an_older_copy_of_an_alert_never_overwrites_a_newer_one(database_url: str) -> None:
    policy = AlertPolicy()
    raised = policy.apply(Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1"))
    cleared = policy.apply(Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=PLACE, source="n1"))
    write(database_url, Batch(alerts=[cleared]))
    write(database_url, Batch(alerts=[raised]))
    with psycopg.connect(database_url) as conn:
        active, revision = conn.execute("SELECT active, revision FROM alerts").fetchone()
        changes = [c for (c,) in conn.execute("SELECT change FROM alert_changes ORDER BY seq")]
    assert (active, revision) == (False, 2)
    assert changes == ["raised"]


def test_an_unreadable_uplink_message_becomes_a_dead_letter(database_url: str) -> None:
    batch = Batch()
    decode("patrolnet/v1/s/events", b'{"kind": "fire"}', batch, "ingest-test")
    decode("patrolnet/v2/s/events", b"{}", batch, "ingest-test")
    decode("patrolnet/v1/s/readings", b"[not json", batch, "ingest-test")
    assert len(batch.dead_letters) == 3 and not batch.events
    write(database_url, batch)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT topic, reason, source FROM dead_letters ORDER BY topic").fetchall()
    assert [r[0] for r in rows] == ["patrolnet/v1/s/events", "patrolnet/v1/s/readings", "patrolnet/v2/s/events"]
    assert "Field required" in rows[0][1] and "not a patrolnet/v1 topic" in rows[2][1]
    assert {r[2] for r in rows} == {"ingest-test"}
