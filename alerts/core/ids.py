"""Ids of what the pipeline makes many of (readings, events): time-ordered UUIDs, version 7 of RFC 9562.

Two reasons. A sensor message of five readings took five ``uuid4`` calls, each a ``getrandom`` system call that
lets go of the GIL and waits to take it back: 16% of the node's receiving thread under load (py-spy). And
PostgreSQL keeps readings under a primary key that begins with the id: random ids land all over that index,
time-ordered ones at its end.

The layout is RFC 9562's: 48 bits of Unix milliseconds, the version, a 12-bit counter (its "method 1"), the variant
and 62 bits drawn once a process (again in a forked child) and mixed with the counter's overflow, so ids are unique
within a process by the counter and between processes by the random bits. Ids that must not be guessed (keys,
sessions, links) stay ``uuid4``.

Example:
    >>> first = time_id(); time.sleep(0.002); second = time_id()
    >>> sorted([second, first]) == [first, second]  # made a millisecond apart or more
    True
    >>> first.version, first.variant == "specified in RFC 4122", first != second
    (7, True, True)
    >>> abs((first.int >> 80) - time.time_ns() // 1_000_000) < 5_000  # its milliseconds are now's
    True
    >>> UUID(str(first)) == first and hash(UUID(int=first.int)) == hash(first) and first.is_safe == SafeUUID.unknown
    True
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from uuid import UUID, SafeUUID

log = logging.getLogger(__name__)

_RANDOM_BITS = 62
_MASK = (1 << _RANDOM_BITS) - 1
_VERSION_AND_VARIANT = 0x7 << 76 | 0b10 << 62


class _Source:
    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.random = int.from_bytes(os.urandom(8)) & _MASK
        self.counter = itertools.count()


_source = _Source()
os.register_at_fork(after_in_child=_source.reseed)


def time_id() -> UUID:
    """A new version 7 UUID: sorts by the millisecond it was made in."""
    n = next(_source.counter)
    ms = time.time_ns() // 1_000_000
    return _uuid(ms << 80 | _VERSION_AND_VARIANT | (n & 0xFFF) << 64 | (_source.random ^ n >> 12) & _MASK)


_UNKNOWN_SAFETY = SafeUUID.unknown
"""Looked up once: ``SafeUUID.unknown`` goes through ``enum.property`` (Python 3.11), 5% of the node's receiving
thread when it was read for every id."""


def _uuid(value: int) -> UUID:
    """``UUID(int=value)`` for a value made 128 bits wide above: set as ``UUID.__init__`` sets it, without its
    checks of arguments that cannot be wrong here (0.3 us, not 0.8; five ids a sensor message)."""
    made = object.__new__(UUID)
    object.__setattr__(made, "int", value)
    object.__setattr__(made, "is_safe", _UNKNOWN_SAFETY)
    return made
