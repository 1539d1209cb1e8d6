"""Python's garbage collector on the alarm path.

A full collection (generation 2) walks every object the process holds, with the GIL held. A node, an ingest
worker or the API holds hundreds of thousands made while starting (modules, pydantic's validators, the detector's
libraries) that live as long as the process, so each full collection took 40 to 110 ms, once in about 100 alarms
of ``bench/bench_sensors.py``, and that was the alarm's p99 (found with ``gc.callbacks``). ``freeze_startup``
moves them out of every later collection's way: the node's and ingest's full collections then took 0.2 to 0.6 ms.

Example: what a full collection walks, before and after (the oldest generation holds what starting made)
    >>> import gc
    >>> gc.unfreeze()
    >>> _ = gc.collect()
    >>> walked = len(gc.get_objects(generation=2))
    >>> freeze_startup()
    >>> len(gc.get_objects(generation=2)) < walked // 100 < gc.get_freeze_count()
    True
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup() -> None:
    """Collects what starting left as garbage, then freezes the rest (``gc.freeze``): no collection walks it again.
    Call once a role has started, before it serves; what it makes afterwards is collected as usual."""
    gc.collect()
    gc.freeze()
    log.debug("%d objects made while starting frozen out of the garbage collector's way", gc.get_freeze_count())
