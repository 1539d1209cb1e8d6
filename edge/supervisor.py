"""Supervision of a node's workers: each one's liveness, restarts with backoff, trouble, and giving up.

Every thread on the alarm path registers here with how to tell it is alive,
how long its current piece of work has run (``Liveness``), and how to restart
it. ``check(now)`` (run every second by ``start()``) looks at each:

- a dead thread is restarted, after a backoff that doubles with each restart
  inside ``window_s`` (1, 2, 4 ... ``max_backoff_s`` seconds);
- a thread busy on one piece of work for over its ``stuck_after_s`` is stuck:
  Python cannot stop a thread, so it is reported, and a critical worker stuck
  for three times that long means the node cannot recover;
- each failure raises a trouble Event (type ``worker_failed``, subject the
  worker's name, routed to the operator by the policy), ended once the
  worker is back;
- more than ``max_restarts`` restarts of one critical worker within
  ``window_s``, or a critical worker stuck for good, calls ``on_fatal`` with
  the reason: the node exits non-zero, and its service manager starts it again.

``report()`` gives each worker's state for the heartbeat.

Example:
    >>> import threading
    >>> events = []
    >>> site = Place(sub_district="n", community="c", grid="g", site="s")
    >>> supervisor = Supervisor("node-1", site, emit=events.extend, on_fatal=print)
    >>> runs = []
    >>> def work() -> None:
    ...     runs.append(1)
    >>> thread = threading.Thread(target=work)
    >>> thread.start(); thread.join()
    >>> def restart() -> None:
    ...     global thread
    ...     thread = threading.Thread(target=work); thread.start(); thread.join()
    >>> supervisor.watch("worker", alive=lambda: thread.is_alive(), restart=restart)
    >>> supervisor.check(now=100.0)
    >>> len(runs), supervisor.report()["worker"]["restarts"], [(e.type, e.state.value) for e in events]
    (2, 1, [('worker_failed', 'start')])
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from alerts.core.models import Event, EventKind, EventState, Place, Severity

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0


class Liveness:
    """When a worker last finished a piece of work, and since when it is busy on the current one.

    >>> liveness = Liveness()
    >>> with liveness.working():
    ...     liveness.busy_s(now=time.monotonic() + 60) >= 60
    True
    >>> liveness.busy_s(now=time.monotonic() + 60), liveness.idle_s(now=time.monotonic() + 60) >= 60, liveness.handled
    (0.0, True, 1)
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.busy_since: float | None = None
        self.handled = 0

    def working(self) -> Liveness:
        """``with liveness.working():`` around each piece of work. Its own enter and exit, not a
        ``contextmanager``'s generator: the sensor path enters it for every message (0.3 us, not 1.3)."""
        return self

    def __enter__(self) -> None:
        self.busy_since = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        self.busy_since = None
        self.last = time.monotonic()
        self.handled += 1

    def busy_s(self, now: float) -> float:
        since = self.busy_since
        return 0.0 if since is None else max(0.0, now - since)

    def idle_s(self, now: float) -> float:
        return max(0.0, now - self.last)


class Probe(Protocol):
    """What the supervisor asks of a worker's liveness (``Liveness`` has it)."""

    def busy_s(self, now: float) -> float: ...

    def idle_s(self, now: float) -> float: ...


@dataclass
class _Worker:
    name: str
    alive: Callable[[], bool]
    restart: Callable[[], None] | None
    liveness: Probe | None
    stuck_after_s: float
    critical: bool
    restarts: deque[float] = field(default_factory=deque)
    total_restarts: int = 0
    state: str = "ok"
    failing_since: float | None = None
    next_restart: float = 0.0


class Supervisor:
    """Watches workers; see the module docstring. ``emit`` takes trouble events, ``on_fatal`` the reason."""

    def __init__(
        self,
        node_id: str,
        place: Place,
        emit: Callable[[list[Event]], None],
        on_fatal: Callable[[str], None],
        *,
        max_restarts: int = 5,
        window_s: float = 300.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.node_id = node_id
        self.place = place
        self.emit = emit
        self.on_fatal = on_fatal
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.max_backoff_s = max_backoff_s
        self.failure: str | None = None
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def watch(
        self,
        name: str,
        alive: Callable[[], bool],
        restart: Callable[[], None] | None = None,
        liveness: Probe | None = None,
        stuck_after_s: float = 60.0,
        critical: bool = True,
    ) -> None:
        """Registers a worker; ``restart`` None means a dead one cannot come back without the process."""
        with self._lock:
            self._workers[name] = _Worker(name, alive, restart, liveness, stuck_after_s, critical)

    def forget(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def report(self) -> dict[str, dict[str, float | str]]:
        """Per worker: state (ok, restarting, stuck, failed), restarts so far, seconds since its last work."""
        now = time.monotonic()
        with self._lock:
            return {
                w.name: {
                    "state": w.state,
                    "restarts": w.total_restarts,
                    **({"idle_s": round(w.liveness.idle_s(now), 1)} if w.liveness else {}),
                }
                for w in self._workers.values()
            }

    def check(self, now: float | None = None) -> None:
        """One round over every worker."""
        now = time.monotonic() if now is None else now
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            try:
                self._check(worker, now)
            except Exception:
                # A restart that fails is retried at the next round, after its backoff.
                log.exception("supervisor: restarting %s failed", worker.name)

    def _run(self) -> None:
        while not self._stopping.wait(CHECK_EVERY_S):
            self.check()

    def _check(self, worker: _Worker, now: float) -> None:
        if not worker.alive():
            self._dead(worker, now)
            return
        busy = worker.liveness.busy_s(now) if worker.liveness else 0.0
        if busy > worker.stuck_after_s:
            if worker.state != "stuck":
                self._failing(worker, "stuck", f"busy on one piece of work for {busy:.0f} s", now)
            if worker.critical and busy > 3 * worker.stuck_after_s:
                self._give_up(f"{worker.name} stuck for {busy:.0f} s")
            return
        if worker.state != "ok":
            log.info("supervisor: %s is working again", worker.name)
            worker.state, worker.failing_since = "ok", None
            self.emit([self._event(worker, EventState.END, f"Node worker {worker.name} working again", {})])

    def _dead(self, worker: _Worker, now: float) -> None:
        if worker.state == "ok":
            self._failing(worker, "restarting", "its thread died", now)
        if worker.restart is None:
            if worker.critical:
                self._give_up(f"{worker.name} died and cannot be restarted")
            return
        if now < worker.next_restart:
            return
        while worker.restarts and now - worker.restarts[0] > self.window_s:
            worker.restarts.popleft()
        if worker.critical and len(worker.restarts) >= self.max_restarts:
            worker.state = "failed"
            self._give_up(f"{worker.name} restarted {len(worker.restarts)} times within {self.window_s:.0f} s")
            return
        worker.restarts.append(now)
        worker.total_restarts += 1
        worker.next_restart = now + min(self.max_backoff_s, 2.0 ** (len(worker.restarts) - 1))
        log.warning("supervisor: restarting %s (restart %d)", worker.name, worker.total_restarts)
        worker.restart()

    def _failing(self, worker: _Worker, state: str, why: str, now: float) -> None:
        log.error("supervisor: %s %s", worker.name, why)
        worker.state, worker.failing_since = state, now
        attributes = {"worker": worker.name, "why": why, "restarts": worker.total_restarts}
        self.emit([self._event(worker, EventState.START, f"Node worker {worker.name} failed: {why}", attributes)])

    def _give_up(self, reason: str) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        log.critical("supervisor: the node cannot recover: %s", reason)
        self.on_fatal(reason)

    def _event(self, worker: _Worker, state: EventState, title: str, attributes: dict[str, object]) -> Event:
        return Event(
            kind=EventKind.TROUBLE,
            type="worker_failed",
            state=state,
            severity=Severity.MAJOR,
            place=self.place,
            source=self.node_id,
            subject=worker.name,
            title=title,
            attributes=attributes,
        )
