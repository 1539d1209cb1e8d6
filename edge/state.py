"""Durable edge state: what the alert policy, alarm verification and sensor rules need after a restart.

It lives in the node's SQLite file, written through the outbox's Spool (one
connection, one file), in a table of its own (``edge_state``): one JSON value
per (part, key), e.g. ("policy", dedup key), ("verification", dedup key),
("sensors", device id). Each ``save`` is one transaction synced to disk, or
joins the open ``Spool.transaction()`` of its thread: the event sink spools a
batch's messages and saves the state they changed in one, so a node killed
at any moment comes back with the state of a whole batch and its messages,
never one without the other.

Example:
    >>> import tempfile, pathlib
    >>> from edge.outbox import Spool
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3")
    >>> state = EdgeState(spool)
    >>> state.save([("sensors", "smoke-1", {"on": ["smoke"]}), ("policy", "k", {"open": []})])
    >>> with spool.transaction():
    ...     seq = spool.put("patrolnet/v1/s/alerts", b"{}")
    ...     state.save([("policy", "k", None)])
    >>> state.load("sensors"), state.load("policy"), spool.pending()
    ({'smoke-1': {'on': ['smoke']}}, {}, 1)
"""

from __future__ import annotations

import json
import logging
from typing import Any

from edge.outbox import Spool

log = logging.getLogger(__name__)

Change = tuple[str, str, dict[str, Any] | None]
"""(part, key, value); a None value deletes the key."""


class EdgeState:
    """A key-value table of JSON values by part, in the Spool's SQLite file."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        with spool.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS edge_state (part TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                " PRIMARY KEY (part, key))"
            )

    def load(self, part: str) -> dict[str, dict[str, Any]]:
        with self.spool.transaction() as db:
            rows = db.execute("SELECT key, value FROM edge_state WHERE part = ?", (part,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    def save(self, changes: list[Change]) -> None:
        """Writes every change in one transaction (the thread's open one, if any); sqlite3.OperationalError if
        the disk stays busy."""
        if not changes:
            return
        with self.spool.transaction() as db:
            for part, key, value in changes:
                if value is None:
                    db.execute("DELETE FROM edge_state WHERE part = ? AND key = ?", (part, key))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO edge_state (part, key, value) VALUES (?, ?, ?)",
                        (part, key, json.dumps(value)),
                    )
