"""Python's garbage collector on the alarm path and the readings' path.

A full collection (generation 2) walks every object the process holds, with the GIL held. A node, an ingest
worker or the API holds hundreds of thousands made while starting (modules, pydantic's validators, the detector's
libraries) that live as long as the process, so each full collection took 40 to 110 ms, once in about 100 alarms
of ``bench/bench_sensors.py``, and that was the alarm's p99 (found with ``gc.callbacks``). ``settle_collector``
freezes them out of every later collection's way: the node's and ingest's full collections then took 0.2 to 0.6 ms.

It also collects the youngest generation every ``YOUNG_EVERY`` objects that outlive their making, not Python's
700. A node's readings wait for their flush, five models a sensor message and a few objects each, so the default
started a collection every 36 or so messages, and every tenth of those walked the middle generation too (2.7-4.6
ms). In ``bench/bench_node.py`` (the node's sensor path without MQTT, 20,000 messages) that made 561, 51 and 4
collections of the three generations, and the thread that handles the messages spent 68-91 us a message; with this,
5 collections (1.4-1.7 ms each, at most 20) and 59-68 us. Cyclic garbage, all that a collection frees, is rare on
these paths: it waits that much longer to be freed.

Example: what a full collection walks, before and after (the oldest generation holds what starting made)
    >>> import gc
    >>> gc.unfreeze()
    >>> _ = gc.collect()
    >>> walked = len(gc.get_objects(generation=2))
    >>> settle_collector()
    >>> len(gc.get_objects(generation=2)) < walked // 100 < gc.get_freeze_count()
    True
    >>> gc.get_threshold()[0] == YOUNG_EVERY
    True
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

YOUNG_EVERY = 10_000


def settle_collector() -> None:
    """Collects what starting left as garbage, freezes the rest (``gc.freeze``: no collection walks it again), and
    collects the youngest generation every ``YOUNG_EVERY`` objects. Call once a role has started, before it
    serves; what it makes afterwards is collected as usual."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_EVERY, *gc.get_threshold()[1:])
    log.debug("%d objects made while starting frozen out of the garbage collector's way", gc.get_freeze_count())
