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

import hashlib
import json
import logging
import secrets
from collections import OrderedDict
from typing import Any

from pydantic_core import to_json

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
        # Each key's last change is what a run of them in turn would leave; two statements then save them all: a
        # batch saves one delivery a sensor message (hundreds under load), and executemany costs half an execute.
        # pydantic's encoder writes a delivery in 0.9 us where json.dumps takes 3.9.
        final = {(part, key): value for part, key, value in changes}
        with self.spool.transaction() as db:
            db.executemany(
                "DELETE FROM edge_state WHERE part = ? AND key = ?", [k for k, value in final.items() if value is None]
            )
            db.executemany(
                "INSERT OR REPLACE INTO edge_state (part, key, value) VALUES (?, ?, ?)",
                [(*k, to_json(value).decode()) for k, value in final.items() if value is not None],
            )


DELIVERIES = "deliveries"
SESSION = "session"
"""The key, among the deliveries, of the broker session the others belong to."""


class Deliveries:
    """The sensor messages (QoS 1) the node has handled lately, to know one the broker sends again.

    The broker sends again every message of the node's session that it holds no acknowledgement for, the
    oldest first, and a node killed after it stored what a message produced but before the broker read its
    acknowledgement has one in the state it restores. Handled again, such a message would replay the rules on
    a state that is already past it: an old ``smoke: false`` would end an alarm that a later message started,
    and that message, sent again too, would start it once more. So the sink saves each message's delivery
    (``note``) in the transaction that stores what it produced, before its acknowledgement; one sent again
    (DUP flag) that ``handled`` knows is acknowledged and otherwise left alone.

    A delivery is the packet id, the topic and a digest of the payload: the broker sends a message again
    with its original packet id, and Mosquitto hands out ids in turn, so one comes back for another message
    only after 65,535 others. Only the latest ``size`` deliveries are kept (at least twice the broker's
    in-flight window: no older one can still be unacknowledged), in as many slots. A broker that lost the
    session (``new_session``) sends nothing again, and its ids start over: what was noted before is void.

    Example:
        >>> import tempfile, pathlib
        >>> from edge.outbox import Spool
        >>> state = EdgeState(Spool(pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3"))
        >>> deliveries = Deliveries(state, size=4)
        >>> state.save([deliveries.new_session(), deliveries.note(7, "zigbee2mqtt/hall", b'{"smoke": true}')])
        >>> restarted = Deliveries(state, size=4)
        >>> restarted.handled(7, "zigbee2mqtt/hall", b'{"smoke": true}'), restarted.handled(8, "zigbee2mqtt/hall", b"")
        (True, False)
        >>> state.save([restarted.new_session()])
        >>> Deliveries(state, size=4).handled(7, "zigbee2mqtt/hall", b'{"smoke": true}')
        False
    """

    def __init__(self, state: EdgeState, size: int) -> None:
        self.size = size
        stored = state.load(DELIVERIES)
        self.session: str = stored.pop(SESSION, {}).get("token", "")
        ours = sorted((d for d in stored.values() if d.get("session") == self.session), key=lambda d: d["n"])
        self._recent: OrderedDict[tuple[int, str, str], int] = OrderedDict()
        for delivery in ours[-size:]:
            self._remember((delivery["mid"], delivery["topic"], delivery["digest"]), delivery["n"])
        self._next = ours[-1]["n"] + 1 if ours else 0

    def new_session(self) -> Change:
        """The broker holds nothing of the node's any more; the change that says so, to save."""
        self.session = secrets.token_hex(8)
        self._recent.clear()
        return (DELIVERIES, SESSION, {"token": self.session})

    def handled(self, mid: int, topic: str, payload: bytes) -> bool:
        """Whether this delivery was noted (by this process, or saved before a restart)."""
        return (mid, topic, _digest(payload)) in self._recent

    def note(self, mid: int, topic: str, payload: bytes) -> Change:
        """Remembers a delivery; the change to save with what the message produced."""
        n, self._next = self._next, self._next + 1
        digest = _digest(payload)
        self._remember((mid, topic, digest), n)
        value = {"mid": mid, "topic": topic, "digest": digest, "n": n, "session": self.session}
        return (DELIVERIES, str(n % self.size), value)

    def _remember(self, key: tuple[int, str, str], n: int) -> None:
        self._recent[key] = n
        self._recent.move_to_end(key)
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)


def _digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=8).hexdigest()
