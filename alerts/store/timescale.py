"""TimescaleDB when it is there, plain PostgreSQL when not: one schema, two storage plans.

The migrations build a schema that works on plain PostgreSQL (BRIN time
indexes, a plain view of hourly counts). After them ``prepare`` tries to create
the extension: where that works, the time-series tables become hypertables
(existing rows migrated), old chunks are compressed and dropped by policies, and
the hourly view becomes a continuous aggregate of the same name and columns with
real-time aggregation on (``timescaledb.materialized_only = false``: since 2.13
an aggregate answers from materialised rows only by default, so the last hour
would be missing), so every query answers the same on either plan.

Where the extension is not installed, ``CREATE EXTENSION`` fails and plain
tables are used. Where it is installed but not in ``shared_preload_libraries``,
TimescaleDB ends the server process and the connection closes under the
statement: ``prepare`` notices the closed connection, says what to change, and
falls back to plain tables too; nothing else ran on that connection. The same
holds for any other refusal (no privilege, say). ``statements`` only builds
the SQL, so the TimescaleDB plan can be checked without TimescaleDB.

Example:
    >>> plan = statements(Retention(events="30 days"), hypertables=set(), compressed=set(), has_aggregate=False)
    >>> plan[0][0].split(",")[:2], plan[0][1]
    (["SELECT create_hypertable('events'", " 'ts'"], ('1 day',))
    >>> [p for sql, p in plan if 'add_retention_policy' in sql and "'events'" in sql]
    [('30 days',)]
    >>> print(bucket_sql(timescale=False))
    date_bin(%s::interval, ts, TIMESTAMPTZ '2000-01-01')
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, fields

import psycopg

log = logging.getLogger(__name__)

# What CREATE EXTENSION raises where the extension's files are missing (PostgreSQL 15+, and before).
NOT_INSTALLED = (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile)
MIGRATE_LOCK = 0x6D696772  # "migr": one migrator at a time, however many replicas start together
_INTERVAL = re.compile(r"^\d+\s*(minute|hour|day|week|month|year)s?$")

# table -> (time column, segment-by columns for compression)
HYPERTABLES: dict[str, tuple[str, str]] = {
    "events": ("ts", "site, device"),
    "readings": ("ts", "site, device, quantity"),
    "alert_changes": ("at", "alert_id"),
    "alert_history": ("at", "alert_id"),
}
AGGREGATE = "event_counts_hourly"
REAL_TIME = "timescaledb.materialized_only = false"
AGGREGATE_SQL = f"""CREATE MATERIALIZED VIEW {AGGREGATE} WITH (timescaledb.continuous, {REAL_TIME}) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, sub_district, community, grid, site, kind,
       count(*) AS events, count(CASE WHEN state = 'start' THEN 1 END) AS starts
FROM events
GROUP BY 1, 2, 3, 4, 5, 6
WITH NO DATA"""


def _interval(value: str, name: str) -> str:
    if not _INTERVAL.match(value.strip()):
        raise ValueError(f"{name}: {value!r} is not a period such as '30 days' or '12 hours'")
    return value.strip()


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept, and when chunks are compressed (PostgreSQL intervals)."""

    events: str = "365 days"
    readings: str = "90 days"
    history: str = "730 days"
    compress_after: str = "7 days"
    chunk: str = "1 day"

    def __post_init__(self) -> None:
        for f in fields(self):
            _interval(getattr(self, f.name), f.name)

    def keep(self, table: str) -> str:
        """The retention period of a hypertable."""
        return {"events": self.events, "readings": self.readings}.get(table, self.history)

    @classmethod
    def from_env(cls, **overrides: str | None) -> Retention:
        """Periods from ``PATROLNET_RETENTION_<FIELD>``, then non-None ``overrides`` (CLI flags)."""
        values = {}
        for f in fields(cls):
            value = overrides.get(f.name) or os.environ.get(f"PATROLNET_RETENTION_{f.name.upper()}")
            if value:
                values[f.name] = value
        return cls(**values)


Statement = tuple[str, tuple[str, ...]]


def statements(
    retention: Retention, hypertables: set[str], compressed: set[str], has_aggregate: bool
) -> list[Statement]:
    """The SQL that brings a database with the extension to the TimescaleDB plan; safe to run again.

    ``hypertables`` and ``compressed`` name the tables already converted or compressed, and
    ``has_aggregate`` tells whether the continuous aggregate exists, so nothing is redone that
    TimescaleDB would refuse to redo (changing compression settings of compressed chunks).
    Policies are removed and added again, so a changed period takes effect.
    """
    plan: list[Statement] = []
    for table, (column, segment_by) in HYPERTABLES.items():
        if table not in hypertables:
            plan.append(
                (
                    f"SELECT create_hypertable('{table}', '{column}', chunk_time_interval => %s::interval,"
                    " migrate_data => TRUE, if_not_exists => TRUE)",
                    (retention.chunk,),
                )
            )
        if table not in compressed:
            plan.append(
                (
                    f"ALTER TABLE {table} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment_by}',"
                    f" timescaledb.compress_orderby = '{column} DESC')",
                    (),
                )
            )
        plan += [
            (f"SELECT remove_compression_policy('{table}', if_exists => TRUE)", ()),
            (f"SELECT add_compression_policy('{table}', compress_after => %s::interval)", (retention.compress_after,)),
            (f"SELECT remove_retention_policy('{table}', if_exists => TRUE)", ()),
            (f"SELECT add_retention_policy('{table}', drop_after => %s::interval)", (retention.keep(table),)),
        ]
    if not has_aggregate:
        plan += [(f"DROP VIEW IF EXISTS {AGGREGATE}", ()), (AGGREGATE_SQL, ())]
    plan += [
        # An aggregate made before real-time aggregation was asked for gets it too.
        (f"ALTER MATERIALIZED VIEW {AGGREGATE} SET ({REAL_TIME})", ()),
        (f"SELECT remove_continuous_aggregate_policy('{AGGREGATE}', if_exists => TRUE)", ()),
        (
            f"SELECT add_continuous_aggregate_policy('{AGGREGATE}', start_offset => INTERVAL '3 days',"
            " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes')",
            (),
        ),
        (f"SELECT remove_retention_policy('{AGGREGATE}', if_exists => TRUE)", ()),
        (f"SELECT add_retention_policy('{AGGREGATE}', drop_after => %s::interval)", (retention.history,)),
    ]
    return plan


def prune_statements(retention: Retention) -> list[Statement]:
    """Plain PostgreSQL's retention: deletes what TimescaleDB's policies would drop.

    >>> prune_statements(Retention())[0]
    ('DELETE FROM events WHERE ts < now() - %s::interval', ('365 days',))
    """
    return [
        (f"DELETE FROM {table} WHERE {column} < now() - %s::interval", (retention.keep(table),))
        for table, (column, _) in HYPERTABLES.items()
    ]


def bucket_sql(timescale: bool) -> str:
    """The time-bucket expression on ``ts`` for a bound interval: time_bucket or its plain twin."""
    return "time_bucket(%s::interval, ts)" if timescale else "date_bin(%s::interval, ts, TIMESTAMPTZ '2000-01-01')"


def enabled(conn: psycopg.Connection) -> bool:
    """Whether the timescaledb extension is installed in this database."""
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def create_extension(conn: psycopg.Connection) -> bool:
    """Creates the timescaledb extension unless there; False (and why, in the log) when it cannot be.

    A failure can close ``conn`` (TimescaleDB not preloaded ends the server process): the caller must
    not use it afterwards.
    """
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or str(exc).strip()
        if conn.closed or conn.broken:
            log.error(
                "CREATE EXTENSION timescaledb closed the connection (%s): TimescaleDB is installed but not loaded."
                " Add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL to use it;"
                " until then patrolnet uses plain PostgreSQL tables",
                reason,
            )
        elif isinstance(exc, NOT_INSTALLED):
            log.info("TimescaleDB is not installed (%s): plain PostgreSQL tables with BRIN time indexes", reason)
        else:
            log.warning("TimescaleDB could not be enabled (%s): plain PostgreSQL tables", reason)
    return False


def prepare(conninfo: str, retention: Retention) -> bool:
    """Creates the extension where it can be and applies the TimescaleDB plan; False on plain PostgreSQL.

    Runs after the migrations, on a connection of its own, one migrator at a time (``MIGRATE_LOCK``).
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))  # released when the connection ends
        if not create_extension(conn):
            return False
        hypertables = {
            name for (name,) in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        compressed = {
            name
            for (name,) in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE compression_enabled"
            )
        }
        has_aggregate = (
            conn.execute(
                "SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", (AGGREGATE,)
            ).fetchone()
            is not None
        )
        for sql, params in statements(retention, hypertables, compressed, has_aggregate):
            conn.execute(sql, params)
    log.info("TimescaleDB: hypertables, compression and retention policies, real-time continuous aggregate")
    return True
