"""The store on a real PostgreSQL: migrations, the TimescaleDB plan, idempotent writes, links, health, duty."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fire_helpers import alert_of

from alerts.core.models import DeadLetter, DeviceStatus, Event, EventKind, EventState, Heartbeat, Place, Reading
from alerts.core.policy import AlertPolicy
from alerts.identity import RegisteredSite
from alerts.intake.writer import IngestWorker, add_message
from alerts.store import timescale
from alerts.store.database import (
    CHANGES_CHANNEL,
    FEW_ROWS,
    RECORD_CHANGES,
    WriteBatch,
    migrate,
    migrations,
    write_batch,
)
from alerts.store.schema import DEAD_LETTERS, EVENTS, READINGS, names
from alerts.store.timescale import Retention

PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="smoke-1")
KNOWN = {"s": RegisteredSite(place=PLACE.model_copy(update={"device": None}), nodes=frozenset({"node-1"}))}


def known(site: str, fresh: bool) -> RegisteredSite | None:
    """The registry of these tests: site s and its node-1."""
    return KNOWN.get(site)


def one(cursor: psycopg.Cursor) -> tuple[Any, ...]:
    """The one row a query returns; the test fails if it returns none."""
    row = cursor.fetchone()
    assert row is not None, "the query returned no row"
    return row


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return one(conn.execute(f"SELECT count(*) FROM {table}"))[0]


def write(url: str, batch: WriteBatch) -> int:
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
    alert = alert_of(AlertPolicy(), event)
    reading = Reading(place=PLACE, quantity="temperature", value=21.5, unit="°C")
    batch = WriteBatch(events=[event], alerts=[alert], readings=[reading])
    assert write(database_url, batch) == 1
    assert write(database_url, batch) == 0
    for table in ("events", "alerts", "readings", "alert_changes"):
        assert count(database_url, table) == 1, table


def test_a_large_batch_copied_again_with_new_rows_keeps_one_of_each_and_the_rest_of_its_transaction(
    database_url: str,
) -> None:
    # Past FEW_ROWS, readings are copied straight into their table; a batch holding rows stored before (a message
    # sent again with more) takes the staged way from a savepoint, and what the transaction wrote before stays.
    readings = [Reading(place=PLACE, quantity="temperature", value=i, unit="°C") for i in range(3 * FEW_ROWS)]
    write(database_url, WriteBatch(readings=readings[: 2 * FEW_ROWS]))
    assert count(database_url, "readings") == 2 * FEW_ROWS
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    write(database_url, WriteBatch(events=[event], readings=readings[FEW_ROWS:]))
    with psycopg.connect(database_url) as conn:
        stored = [v for (v,) in conn.execute("SELECT value FROM readings ORDER BY value")]
    assert stored == [float(i) for i in range(3 * FEW_ROWS)]
    assert count(database_url, "events") == 1


def test_a_binary_copy_stores_what_single_inserts_store(database_url: str) -> None:
    # Past FEW_ROWS the rows go by binary COPY, typed by the schema; up to it, by INSERTs of text parameters.
    # Every kind of column (uuid, time, text, enum, float, bool and null, text[], jsonb, bytea) must come out alike,
    # and the alerts' links to their events (a table of its own columns).
    n = FEW_ROWS + 10
    events = [
        Event(
            kind=EventKind.FIRE if i % 2 else EventKind.SECURITY,
            type="smoke",
            state=EventState.END if i % 3 else EventState.START,
            place=PLACE if i % 2 else PLACE.model_copy(update={"device": None}),
            source="n1",
            readings={"temperature": 20.5 + i} if i % 2 else {},
            confirmed=None if i % 3 == 0 else bool(i % 2),
            confirmed_by=["smoke-1", "smoke-2"][: i % 3],
            title=f"smoke {i} 烟",
            test=bool(i % 4 == 0),
            attributes={"n": i, "nested": {"ok": [1, None, "x"]}},
            snapshot=bytes([i % 256]) * 3 if i % 5 == 0 else None,
        )
        for i in range(n)
    ]
    readings = [Reading(place=PLACE, quantity="温度", value=-1.5 * i, unit="" if i % 2 else "°C") for i in range(n)]
    letters = [DeadLetter(topic=f"t/{i}", payload=b"\x00\xff" * i, reason="r", source="n1") for i in range(n)]
    fires = [Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1") for _ in range(n)]
    alerts = [alert_of(AlertPolicy(), fire) for fire in fires]
    tables = {
        t.name: f"{', '.join(names(t.written))} FROM {t.name} ORDER BY id" for t in (EVENTS, READINGS, DEAD_LETTERS)
    }
    tables["alert_events"] = "alert_id, event_id FROM alert_events ORDER BY alert_id"  # each alert's link to its event

    def stored() -> dict[str, list[tuple[Any, ...]]]:
        """The columns written (not those the database fills, such as the time a row was stored)."""
        with psycopg.connect(database_url) as conn:
            return {table: conn.execute(f"SELECT {query}").fetchall() for table, query in tables.items()}

    write(database_url, WriteBatch(events=events, alerts=alerts, readings=readings, dead_letters=letters))
    copied = stored()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"DELETE FROM {table}")
    for part in (slice(0, n // 2), slice(n // 2, n)):
        write(
            database_url,
            WriteBatch(events=events[part], alerts=alerts[part], readings=readings[part], dead_letters=letters[part]),
        )
    assert [len(rows) for rows in copied.values()] == [n, n, n, n]
    assert copied == stored()


def test_an_older_copy_of_an_alert_never_overwrites_a_newer_one(database_url: str) -> None:
    policy = AlertPolicy()
    raised = alert_of(policy, Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1"))
    cleared = alert_of(policy, Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=PLACE, source="n1"))
    write(database_url, WriteBatch(alerts=[cleared]))
    write(database_url, WriteBatch(alerts=[raised]))
    with psycopg.connect(database_url) as conn:
        active, revision = one(conn.execute("SELECT active, revision FROM alerts"))
        changes = [c for (c,) in conn.execute("SELECT change FROM alert_changes ORDER BY seq")]
    assert (active, revision) == (False, 2)
    assert changes == ["raised"]


@pytest.mark.parametrize("readings", [0, 60], ids=["pipelined", "copied"])
def test_copies_of_a_new_alert_from_two_sites_in_one_batch_store_the_first_by_revision(
    database_url: str, readings: int
) -> None:
    """Ingest sends every copy's upsert with the query of who owns the ids, before reading either: the site guard
    must leave the copy it refuses unwritten. Judged and upserted in the order of revisions, the first copy
    raises the alert, and the other site's, first in the batch, is a dead letter with no link and no change.
    Written as ingest writes a batch of a few rows (one pipelined round trip) and of many (COPY)."""
    policy = AlertPolicy()
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    genuine = alert_of(policy, event)
    forged = genuine.model_copy(update={"place": PLACE.model_copy(update={"site": "t"}), "revision": 2})
    padding = [Reading(place=PLACE, quantity="temperature", value=20.0 + i, unit="°C") for i in range(readings)]
    batch = WriteBatch(events=[event], alerts=[forged, genuine], readings=padding)
    assert batch.small() == (readings == 0)
    worker = IngestWorker("mqtt://127.0.0.1:1", database_url, name="two-sites")  # never connected: no broker
    worker._commit(batch)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT id, site, revision FROM alerts").fetchall() == [(genuine.id, "s", 1)]
        assert conn.execute("SELECT alert_id, event_id FROM alert_events").fetchall() == [(genuine.id, event.id)]
        assert conn.execute("SELECT change FROM alert_changes").fetchall() == [("raised",)]
        refusal = f"alert {genuine.id} was raised by site 's'; a copy from site 't' may not change it"
        assert conn.execute("SELECT topic, reason FROM dead_letters").fetchall() == [("patrolnet/v1/t/alerts", refusal)]


def test_alert_changes_are_logged_in_commit_order_and_wake_the_listeners(database_url: str) -> None:
    alerts = [alert_of(AlertPolicy(), Event(kind=EventKind.FIRE, type=t, place=PLACE, source="n1")) for t in "ab"]
    write(database_url, WriteBatch(alerts=alerts))
    first, second = (a.id for a in alerts)
    with (
        psycopg.connect(database_url, autocommit=True) as holder,
        psycopg.connect(database_url, autocommit=True) as other,
        psycopg.connect(database_url, autocommit=True) as listener,
    ):
        listener.execute(f"LISTEN {CHANGES_CHANNEL}")
        with holder.transaction():
            assert (
                one(holder.execute(RECORD_CHANGES, ([first, second, first], ["updated", "cleared", "raised"])))[0] == 3
            )
            # A second writer waits for the first to commit: its seq can never commit before a smaller one.
            with pytest.raises(psycopg.errors.LockNotAvailable), other.transaction():
                other.execute("SET LOCAL lock_timeout = '300ms'")
                other.execute(RECORD_CHANGES, ([second], ["updated"]))
            assert list(listener.notifies(timeout=0.5, stop_after=1)) == [], "no wake-up before the commit"
        [woken] = listener.notifies(timeout=5, stop_after=1)
        assert woken.channel == CHANGES_CHANNEL
        with other.transaction():
            other.execute(RECORD_CHANGES, ([second], ["updated"]))
        with pytest.raises(psycopg.errors.RaiseException, match="1 alert ids but 2 changes"):
            other.execute(RECORD_CHANGES, ([second], ["updated", "cleared"]))
        logged = other.execute("SELECT alert_id, change FROM alert_changes ORDER BY seq").fetchall()
    assert logged == [(first, "raised"), (second, "raised"), (first, "updated"), (second, "cleared"),
                      (first, "raised"), (second, "updated")]  # fmt: skip


def test_an_unreadable_uplink_message_becomes_a_dead_letter(database_url: str) -> None:
    batch = WriteBatch()
    add_message("patrolnet/v1/s/events", b'{"kind": "fire"}', batch, "ingest-test", known)
    add_message("patrolnet/v2/s/events", b"{}", batch, "ingest-test", known)
    add_message("patrolnet/v1/s/readings", b"[not json", batch, "ingest-test", known)
    assert len(batch.dead_letters) == 3 and not batch.events
    write(database_url, batch)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT topic, reason, source FROM dead_letters ORDER BY topic").fetchall()
    assert [r[0] for r in rows] == ["patrolnet/v1/s/events", "patrolnet/v1/s/readings", "patrolnet/v2/s/events"]
    assert "Field required" in rows[0][1] and "not a patrolnet/v1 topic" in rows[2][1]
    assert {r[2] for r in rows} == {"ingest-test"}


def test_the_schema_answers_the_same_on_either_storage_plan(database_url: str) -> None:
    # Whichever plan this PostgreSQL allows (TimescaleDB where it can be enabled), preparing it again agrees.
    assert timescale.prepare(database_url, Retention()) is count_extension(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = {t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        brin = {i for (i,) in conn.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING brin%'")}
    assert {
        "alert_events",
        "nodes",
        "devices",
        "duty_rotation",
        "reporters",
        "webhooks",
        "webhook_deliveries",
    } <= tables
    assert {"events_ts_brin", "readings_ts_brin", "alert_changes_at_brin", "alert_history_at_brin"} <= brin

    now = datetime.now(UTC).replace(minute=10)
    events = [
        Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", ts=now),
        Event(kind=EventKind.FIRE, type="smoke", state=EventState.UPDATE, place=PLACE, source="n1", ts=now),
        Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", ts=now - timedelta(days=400)),
    ]
    write(database_url, WriteBatch(events=events))
    with psycopg.connect(database_url) as conn:
        hourly = conn.execute(
            "SELECT bucket, site, kind, events, starts FROM event_counts_hourly ORDER BY bucket DESC"
        ).fetchall()
        # Events just written are counted at once: a continuous aggregate aggregates in real time.
        assert hourly[0] == (now.replace(minute=0, second=0, microsecond=0), "s", "fire", 2, 1)
        # `patrolnet db prune`, plain PostgreSQL's retention (and a manual one on TimescaleDB).
        for sql, params in timescale.prune_statements(Retention(events="365 days")):
            conn.execute(sql, params)
        assert one(conn.execute("SELECT count(*) FROM events"))[0] == 2


def count_extension(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return timescale.enabled(conn)


def test_migrate_survives_a_create_extension_that_closes_the_connection(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """TimescaleDB installed but not in shared_preload_libraries ends the server process that runs CREATE
    EXTENSION. No TimescaleDB here, so an event trigger does the same for real: it terminates the backend
    running CREATE EXTENSION, and PostgreSQL closes the connection under the statement."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION end_backend() RETURNS event_trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); END $$"
        )
        conn.execute(
            "CREATE EVENT TRIGGER closes_on_create_extension ON ddl_command_start"
            " WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION end_backend()"
        )
    with caplog.at_level(logging.INFO, logger="alerts.store.timescale"):
        assert migrate(database_url) == []
    [message] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "closed the connection" in message.getMessage() and "shared_preload_libraries" in message.getMessage()
    # Plain tables, and the store and the hourly view work on them.
    assert count_extension(database_url) is False
    event = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    write(database_url, WriteBatch(events=[event]))
    with psycopg.connect(database_url) as conn:
        assert one(conn.execute("SELECT sum(events) FROM event_counts_hourly"))[0] == 1


def test_the_timescaledb_plan_converts_compresses_retains_and_aggregates() -> None:
    retention = Retention(events="30 days", readings="14 days", history="2 years", compress_after="3 days")
    plan = timescale.statements(retention, hypertables=set(), compressed=set(), has_aggregate=False)
    sql = [s for s, _ in plan]
    for table, column in (("events", "ts"), ("readings", "ts"), ("alert_changes", "at"), ("alert_history", "at")):
        create = next(i for i, s in enumerate(sql) if s.startswith(f"SELECT create_hypertable('{table}', '{column}'"))
        assert "migrate_data => TRUE" in sql[create] and "if_not_exists => TRUE" in sql[create]
        assert plan[create][1] == ("1 day",)
        assert sql[create + 1].startswith(f"ALTER TABLE {table} SET (timescaledb.compress")
        assert f"compress_orderby = '{column} DESC'" in sql[create + 1]
        assert (f"SELECT add_compression_policy('{table}', compress_after => %s::interval)", ("3 days",)) in plan
        # Policies are replaced, so a changed period takes effect on the next start.
        remove = sql.index(f"SELECT remove_retention_policy('{table}', if_exists => TRUE)")
        assert plan[remove + 1] == (
            f"SELECT add_retention_policy('{table}', drop_after => %s::interval)",
            (retention.keep(table),),
        )
    assert [retention.keep(t) for t in ("events", "readings", "alert_changes")] == ["30 days", "14 days", "2 years"]
    drop = sql.index("DROP VIEW IF EXISTS event_counts_hourly")
    aggregate = sql[drop + 1]
    assert "WITH (timescaledb.continuous, timescaledb.materialized_only = false)" in aggregate
    assert "time_bucket(INTERVAL '1 hour', ts)" in aggregate
    assert any("add_continuous_aggregate_policy('event_counts_hourly'" in s for s in sql)

    # Run again on a converted database: only the policies are renewed, and real-time aggregation asked for
    # (an aggregate made before it was, answering from materialised rows only, gets it).
    done = set(timescale.HYPERTABLES)
    again = [s for s, _ in timescale.statements(retention, done, done, has_aggregate=True)]
    changes = [s for s in again if "create_hypertable" in s or s.startswith(("ALTER", "CREATE", "DROP"))]
    assert changes == ["ALTER MATERIALIZED VIEW event_counts_hourly SET (timescaledb.materialized_only = false)"]
    assert timescale.bucket_sql(True) == "time_bucket(%s::interval, ts)"


def test_retention_periods_come_from_flags_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATROLNET_RETENTION_EVENTS", "60 days")
    monkeypatch.setenv("PATROLNET_RETENTION_READINGS", "10 days")
    retention = Retention.from_env(readings="20 days", history=None)
    assert (retention.events, retention.readings, retention.history) == ("60 days", "20 days", "730 days")
    with pytest.raises(ValueError, match="events: '1; DROP TABLE events' is not a period"):
        Retention(events="1; DROP TABLE events")


def test_events_keep_snapshots_and_each_alert_copy_links_its_event(database_url: str) -> None:
    policy = AlertPolicy()
    first = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", snapshot=b"\xff\xd8\xff\xe0jpeg")
    second = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1")
    alerts = [alert_of(policy, first), alert_of(policy, second)]
    write(database_url, WriteBatch(events=[first, second], alerts=alerts))
    write(database_url, WriteBatch(alerts=alerts))  # redelivered copies link nothing twice
    with psycopg.connect(database_url) as conn:
        links = conn.execute("SELECT alert_id, event_id FROM alert_events ORDER BY linked_at").fetchall()
        snapshot = one(conn.execute("SELECT snapshot FROM events WHERE id = %s", (first.id,)))[0]
    assert sorted(links) == sorted([(alerts[0].id, first.id), (alerts[0].id, second.id)])
    assert bytes(snapshot) == b"\xff\xd8\xff\xe0jpeg"


def heartbeat(ts: datetime, online: bool) -> Heartbeat:
    place = PLACE.model_copy(update={"device": None})
    return Heartbeat(
        ts=ts,
        node_id="node-1",
        place=place,
        started_at=ts - timedelta(hours=1),
        devices=[DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=online, detail={"battery": 80})],
        counters={"spool": 3.0},
    )


def test_heartbeats_keep_the_newest_health_of_nodes_and_devices(database_url: str) -> None:
    now = datetime.now(UTC)
    newer, older = heartbeat(now, online=False), heartbeat(now - timedelta(seconds=30), online=True)
    batch = WriteBatch()
    add_message("patrolnet/v1/s/heartbeats", newer.model_dump_json().encode(), batch, "ingest-test", known)
    assert batch.heartbeats == [newer]
    write(database_url, batch)
    write(database_url, WriteBatch(heartbeats=[older]))
    with psycopg.connect(database_url) as conn:
        node = conn.execute("SELECT node_id, site, heartbeat_at, counters FROM nodes").fetchall()
        devices = conn.execute("SELECT site, device, online, detail, node_id FROM devices").fetchall()
    assert node == [("node-1", "s", newer.ts, {"spool": 3.0})]
    assert devices == [("s", "smoke-1", False, {"battery": 80}, "node-1")]


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("2024-05-06 09:00", "day shift"),  # Monday, within 08:00-20:00
        ("2024-05-06 21:00", "night shift"),  # Monday evening, 20:00-06:00 runs past midnight
        ("2024-05-07 05:00", "night shift"),  # ... into Tuesday morning
        ("2024-05-07 07:00", None),  # Tuesday: nobody
    ],
)
def test_the_person_on_duty_when_an_alert_is_raised_is_recorded(database_url: str, local: str, expected) -> None:
    shifts = [("08:00", "20:00", "day shift"), ("20:00", "06:00", "night shift")]
    with psycopg.connect(database_url) as conn:
        for starts, ends, person in shifts:
            conn.execute(
                "INSERT INTO duty_rotation (id, sub_district, community, grid, weekday, starts, ends, person,"
                " contact, timezone) VALUES (%s, 'sd', 'c', 'g', 1, %s, %s, %s, '555', 'Asia/Shanghai')",
                (uuid4(), starts, ends, person),
            )
    ts = datetime.fromisoformat(local).replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    alert = alert_of(AlertPolicy(), Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", ts=ts))
    write(database_url, WriteBatch(alerts=[alert]))
    with psycopg.connect(database_url) as conn:
        assert one(conn.execute("SELECT on_duty FROM alerts"))[0] == expected


def patrolnet(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATROLNET_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=env, capture_output=True, text=True)


def test_the_db_and_apikey_commands(database_url: str) -> None:
    migrated = patrolnet(database_url, "db", "migrate", "--retention-events", "30 days")
    assert (migrated.returncode, migrated.stdout) == (0, "the schema is up to date\n"), migrated.stderr
    assert "is not a period" in patrolnet(database_url, "db", "migrate", "--retention-readings", "soon").stderr
    pruned = patrolnet(database_url, "db", "prune", "--retention-readings", "1 day")
    assert pruned.returncode == 0 and "DELETE FROM readings: 0 rows" in pruned.stdout

    key = patrolnet(database_url, "apikey", "create", "--role", "fire", "--name", "desk", "--community", "c1")
    assert key.stdout.startswith("pn_")
    [listed] = patrolnet(database_url, "apikey", "list").stdout.splitlines()
    key_id = listed.split()[0]
    assert "fire" in listed and "active" in listed and "c1" in listed
    assert patrolnet(database_url, "apikey", "revoke", key_id).returncode == 0
    assert "revoked" in patrolnet(database_url, "apikey", "list").stdout
    assert patrolnet(database_url, "apikey", "revoke", key_id).returncode == 1


def test_migration_5_moves_readings_confirmation_and_test_out_of_the_attributes(database_url: str) -> None:
    # The store as version 4 left it, with a confirmed alarm, its event and a test event in the old form.
    old = {"readings": {"smoke": 1.0}, "confirmed": True, "confirmed_by": ["a", "b"], "trigger": "smoke"}
    alarm = Event(kind=EventKind.FIRE, type="smoke", place=PLACE, source="n1", attributes=old)
    test = Event(kind=EventKind.FIRE, type="test", place=PLACE, source="n1", attributes={"test": True})
    alert = alert_of(AlertPolicy(), alarm)
    assert alert is not None
    write(database_url, WriteBatch(events=[alarm, test], alerts=[alert]))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE events DROP COLUMN test, DROP COLUMN readings, DROP COLUMN confirmed,"
                     " DROP COLUMN confirmed_by")  # fmt: skip
        conn.execute("ALTER TABLE alerts DROP COLUMN readings, DROP COLUMN confirmed, DROP COLUMN confirmed_by")
        conn.execute("DELETE FROM schema_migrations WHERE version = 5")
    assert migrate(database_url) == ["0005_typed_event_fields.sql"]
    with psycopg.connect(database_url) as conn:
        events = conn.execute(
            "SELECT type, test, readings, confirmed, confirmed_by, attributes FROM events ORDER BY type"
        ).fetchall()
        alerts = conn.execute("SELECT readings, confirmed, confirmed_by, attributes FROM alerts").fetchall()
    assert events == [
        ("smoke", False, {"smoke": 1.0}, True, ["a", "b"], {"trigger": "smoke"}),
        ("test", True, {}, None, [], {}),
    ]
    assert alerts == [({"smoke": 1.0}, True, ["a", "b"], {"trigger": "smoke"})]
