"""Escalation: an alert nobody acknowledges goes up its chain, step by step, exactly once however many run it.

Chains (``alerts.store.escalation``, migration 0012) are per kind, route and minimum severity; the issue's
defaults are seeded: a fire alarm unacknowledged for 60 s goes to the community's desk and at 3 minutes to the
sub-district's and the fire brigade's duty officer; security after 5 minutes and trouble after 30 to the
community's desk. ``PUT /api/v1/escalation/chains`` replaces them.

- **Start**: a trigger on ``alerts`` starts the chain when an alert is stored new, whoever stores it; the
  writers are not touched. A step's delay counts from then (the centre's clock, not the edge's).
- **Steps**: each API process runs an ``EscalationRunner`` (a task of its event loop, every ``poll_s``). It
  reads the rows whose ``look_at`` has come (by an index: a step's due time, an acknowledgement's timeout, now
  after a change of the alert or of the chains; migration 0020), then takes each alert in a transaction of its
  own: the alert's row as a desk's action locks it, the escalation row ``FOR UPDATE SKIP LOCKED`` (another
  runner holding it has it), the state and the status read again under those locks, then the step's entry in
  the audit trail (actor ``escalation``, action ``escalate``, a note naming whom it went to), its ``escalated``
  change on the stream and to webhooks, the robots' messages, and the next step's time, all in that one
  transaction. A second runner therefore finds the step done or the row locked: never a step twice, and an
  acknowledgement committed first stops it.
- **Whom**: a person, the alert's grid team, a desk's people on duty, a chat-group robot; a robot's message
  mentions the mobiles of the people its step notifies. Nobody on duty is said so in the trail.
- **Repeat**: after the last step the chain runs again ``repeat`` times, each round as long as its last delay.
- **Acknowledgement**: stops it. An acknowledgement older than the chain's ``ack_timeout_s`` with the alert
  still unresolved puts the alert back to new (action ``unacknowledge``, change ``unacknowledged``) and the
  chain starts again with its first step at once, the later ones at their gaps after it (as PagerDuty does).
- **End**: resolved or dismissed; cleared by itself under a chain with ``stop_when_cleared`` (trouble); the
  chain run out (until an acknowledgement times out); no chain for the alert any more.

A row the runner cannot handle is logged and left alone for ``hold_s``; the rest go on.

Example:
    >>> from alerts.store.escalation import ChainIn
    >>> chain = ChainIn(kind="fire", repeat=1, steps=[{"delay_s": 60, "targets": [{"type": "grid_team"}]},
    ...                                               {"delay_s": 180, "targets": [{"type": "grid_team"}]}])
    >>> following(chain, 0, 0), following(chain, 1, 0), following(chain, 1, 1)
    ((1, 0), (0, 1), None)
    >>> from datetime import UTC, datetime
    >>> due_time(chain, datetime(2024, 5, 1, 8, 0, tzinfo=UTC), 0, 1).time()
    datetime.time(8, 4)
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from alerts.core.models import AlertStatus
from alerts.store import escalation as store
from alerts.store.escalation import Chain, ChainIn, DeskTarget, Escalating, GridTeamTarget, PersonTarget, RobotTarget

log = logging.getLogger(__name__)


def following(chain: ChainIn, step: int, round_: int) -> tuple[int, int] | None:
    """The (step, round) after ``step`` of ``round_``, or None when the chain has run out."""
    if step + 1 < len(chain.steps):
        return step + 1, round_
    if round_ < chain.repeat:
        return 0, round_ + 1
    return None


def due_time(chain: ChainIn, started_at: datetime, step: int, round_: int) -> datetime:
    """When ``step`` of ``round_`` is due, for a chain started at ``started_at``."""
    return started_at + timedelta(seconds=round_ * chain.period_s + chain.steps[step].delay_s)


class EscalationRunner:
    """Runs due escalation steps and acknowledgement timeouts on the API's pool until stopped."""

    def __init__(self, pool: AsyncConnectionPool, poll_s: float = 1.0, batch: int = 50, hold_s: float = 60.0) -> None:
        self.pool = pool
        self.poll_s = poll_s
        self.batch = batch
        self.hold_s = hold_s
        self._held: dict[UUID, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except psycopg.OperationalError as exc:
                log.warning("escalation: database away, retrying: %s", exc)
            except Exception:
                log.exception("escalation: a pass failed; going on")
            await asyncio.sleep(self.poll_s)

    async def run_once(self) -> int:
        """Handles what is due now, alert by alert; returns how many alerts it changed."""
        now = time.monotonic()
        self._held = {alert_id: until for alert_id, until in self._held.items() if until > now}
        async with self.pool.connection() as conn:
            due = await store.due(conn, self.batch, list(self._held))
        changed = 0
        for alert_id in due:
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    changed += await self._advance(conn, alert_id)
            except psycopg.OperationalError:
                raise
            except Exception:
                log.exception("escalation of alert %s failed; left alone for %g s", alert_id, self.hold_s)
                self._held[alert_id] = time.monotonic() + self.hold_s
        return changed

    async def _advance(self, conn: psycopg.AsyncConnection, alert_id: UUID) -> bool:
        """Does what is due for one alert under its locks; whether it changed anything."""
        claimed = await store.claim(conn, alert_id)
        if claimed is None:
            return False
        alert, chain = claimed
        open_ = alert.status in (AlertStatus.NEW, AlertStatus.ACKNOWLEDGED)
        if chain is None or not open_ or (chain.stop_when_cleared and not alert.active):
            await store.finish(conn, alert_id)
            return True
        if alert.status is AlertStatus.ACKNOWLEDGED:
            timeout = chain.ack_timeout_s
            if timeout is None or alert.status_at is None:
                await store.look_again(conn, alert_id, None)
                return False
            ends = alert.status_at + timedelta(seconds=timeout)
            if ends > alert.now:
                await store.look_again(conn, alert_id, ends)
                return False
            await self._unacknowledge(conn, alert, chain, timeout)
            return True
        if alert.due_at is None or alert.due_at > alert.now:
            await store.look_again(conn, alert_id, alert.due_at)
            return False
        if alert.step < len(chain.steps):
            await self._escalate(conn, alert, chain)
        await self._schedule(conn, alert, chain, following(chain, min(alert.step, len(chain.steps) - 1), alert.round))
        return True

    async def _schedule(
        self, conn: psycopg.AsyncConnection, alert: Escalating, chain: Chain, position: tuple[int, int] | None
    ) -> None:
        step, round_ = position or (alert.step, alert.round)
        due_at = due_time(chain, alert.started_at, step, round_) if position is not None else None
        await store.schedule(conn, alert.alert_id, step, round_, due_at, alert.started_at)

    async def _unacknowledge(
        self, conn: psycopg.AsyncConnection, alert: Escalating, chain: Chain, timeout: float
    ) -> None:
        await store.reopen(conn, alert.alert_id)
        note = f"acknowledged but not resolved within {timeout:g} s: unacknowledged, escalating again"
        await store.record(conn, alert, "unacknowledge", AlertStatus.NEW, note, "unacknowledged")
        # The first step at once, the later ones at their gaps after it.
        started = alert.now - timedelta(seconds=chain.steps[0].delay_s)
        await store.schedule(conn, alert.alert_id, 0, 0, alert.now, started)
        log.info("alert %s: acknowledgement timed out after %g s; escalating again", alert.alert_id, timeout)

    async def _escalate(self, conn: psycopg.AsyncConnection, alert: Escalating, chain: Chain) -> None:
        """Notifies one step's targets: its audit entry, its change for the streams, its robots' messages."""
        parts, mobiles, robots = [], [], []
        for target in chain.steps[alert.step].targets:
            if isinstance(target, RobotTarget):
                format_ = await store.robot(conn, target.webhook_id)
                parts.append(f"{format_} robot {target.webhook_id}" if format_ else f"robot {target.webhook_id} (gone)")
                robots += [target.webhook_id] if format_ else []
                continue
            people = await store.people(conn, target, alert)
            names = ", ".join(p.name for p in people) or "nobody on duty"
            parts.append(f"{_label(target, alert)}: {names}")
            mobiles += [p.mobile for p in people if p.mobile and p.mobile not in mobiles]
        where = f"step {alert.step + 1} of {len(chain.steps)}" + (f", round {alert.round + 1}" if chain.repeat else "")
        note = f"{where}, to {'; '.join(parts)}"
        await store.record(conn, alert, "escalate", alert.status, note, "escalated")
        for webhook_id in robots:
            await store.queue_robot(conn, webhook_id, alert.alert_id, "escalated", mobiles)
        log.info("alert %s escalated: %s", alert.alert_id, note)


def _label(target: PersonTarget | GridTeamTarget | DeskTarget, alert: Escalating) -> str:
    """How the trail names a target."""
    if isinstance(target, GridTeamTarget):
        return f"grid {alert.community}/{alert.grid} team"
    if isinstance(target, DeskTarget):
        place = {"community": alert.community, "sub_district": alert.sub_district, "district": "district"}
        return f"{place[target.level]} {target.role or alert.route} desk"
    return "person"
