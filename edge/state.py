"""Durable edge state: what the alert policy, alarm verification and sensor rules need after a restart.

It lives in the node's SQLite file beside the outbox, in a table of its own
(``edge_state``): one JSON value per (part, key), e.g. ("policy", dedup key),
("verification", dedup key), ("sensors", device id). Each ``save`` is one
transaction synced to disk, so a node killed at any moment comes back with
the state of a whole message, never half of one.

Example:
    >>> import tempfile, pathlib
    >>> state = EdgeState(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3")
    >>> state.save([("sensors", "smoke-1", {"on": ["smoke"]}), ("policy", "k", {"open": []})])
    >>> state.save([("policy", "k", None)])
    >>> state.load("sensors"), state.load("policy")
    ({'smoke-1': {'on': ['smoke']}}, {})
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Change = tuple[str, str, dict[str, Any] | None]
"""(part, key, value); a None value deletes the key."""


class EdgeState:
    """A key-value table of JSON values by part, in the node's SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS edge_state (part TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                " PRIMARY KEY (part, key))"
            )

    def load(self, part: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM edge_state WHERE part = ?", (part,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    def save(self, changes: list[Change]) -> None:
        """Writes every change in one transaction; sqlite3.OperationalError if the disk stays busy."""
        if not changes:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for part, key, value in changes:
                    if value is None:
                        self._db.execute("DELETE FROM edge_state WHERE part = ? AND key = ?", (part, key))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO edge_state (part, key, value) VALUES (?, ?, ?)",
                            (part, key, json.dumps(value)),
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
