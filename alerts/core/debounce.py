"""Debounce: one switch over a flickering input, on after ``on_s``, off after ``off_s``.

Every "raise it once it has held, end it once it has been gone" in the tree is one :class:`Debounce`: a
video rule's condition (a track in a zone), a tamper check (a blinded picture), a camera's frames (offline
after a grace without any) and a fire sensor's state (on and off at once: ``Debounce(0, 0)`` is an edge
detector). It lives beside the shared types because ingest uses it as well as the detectors.

The input is reported with :meth:`Debounce.update` at times that only go forward:

- ``True``: seen on. A run of sightings starts at the first; the switch turns on once the run has lasted ``on_s``.
  Gaps shorter than ``off_s`` do not break a run.
- ``False``: seen off. The input counts as off from the first such report; it also cancels a start still pending.
- ``None``: not seen either way (a track missing from a frame, no frame at all): the input counts as off from
  the last sighting.

The switch turns off once the input has counted as off for ``off_s``. :meth:`update` returns the new state
when the switch turns (True on, False off) and None otherwise. Times are seconds on any clock.

Example:
    >>> door = Debounce(on_s=2, off_s=3)
    >>> [door.update(seen, t) for t, seen in enumerate([True, None, True, True, None, None, None, None])]
    [None, None, True, None, None, None, False, None]
    >>> (door.since, door.last_seen)
    (0, 3)
    >>> smoke = Debounce(0, 0)
    >>> [smoke.update(on, t) for t, on in enumerate([False, True, True, False, False])]
    [None, True, None, False, None]
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Debounce:
    """On once the input has been seen for ``on_s``, off once it has been gone ``off_s``; see the module docstring."""

    __slots__ = ("_gone", "held", "last_seen", "off_s", "on", "on_s", "since")

    def __init__(self, on_s: float, off_s: float) -> None:
        self.on_s, self.off_s = on_s, off_s
        self.on = False
        self.held = False
        """A run of sightings is going on (it may not have switched on yet)."""
        self.since = 0.0
        """When the latest run of sightings started (0 before the first); kept after it ends, for its duration."""
        self.last_seen = 0.0
        """When the input was last seen on (0 before the first)."""
        self._gone: float | None = None
        """The first report of the input off since it was last seen on."""

    def update(self, seen: bool | None, ts: float) -> bool | None:
        """Reports the input at ``ts``; returns True when the switch turns on, False when it turns off, else None."""
        if seen:
            if not self.held:
                self.held, self.since = True, ts
            self.last_seen, self._gone = ts, None
            if not self.on and ts - self.since >= self.on_s:
                self.on = True
                return True
            return None
        if seen is False:
            self._gone = ts if self._gone is None else self._gone
            self.held = self.held and self.on
        if not self.held:
            return None
        gone = self._gone if self._gone is not None else self.last_seen
        if ts - gone < self.off_s:
            return None
        self.held = False
        if self.on:
            self.on = False
            return False
        return None
