"""Dead letters of a node: what it could not read goes upstream with the reason, through the event sink.

The sensor pipeline sends one for a payload it cannot read (or a field of
it, or one that made it raise), the node for a camera frame that failed. A
source that keeps failing (a camera whose every frame fails, a device nobody
configured that reports every few seconds) is rate-limited with ``due``; each
message is still counted by its sender.

Example:
    >>> import tempfile, pathlib
    >>> from alerts.core.policy import AlertPolicy
    >>> from detectors.verification import AlarmVerification
    >>> from edge.outbox import Spool
    >>> from edge.state import EdgeState
    >>> sent = []
    >>> state = EdgeState(Spool(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite3"))
    >>> sink = EventSink(AlarmVerification(), AlertPolicy(), state, send=lambda channel, payload: sent.append(channel))
    >>> letters = DeadLetters(sink, source="n1")
    >>> sink.start()
    >>> letters.send("zigbee2mqtt/hall", b"{", "not JSON")
    >>> letters.due("camera/gate", 60.0), letters.due("camera/gate", 60.0)
    (True, False)
    >>> sink.stop()
    >>> sent, letters.counts["dead_letters"]
    (['deadletters'], 1)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from alerts.core.models import DeadLetter
from alerts.core.protocol import encode
from edge.sink import EventSink, Outgoing

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends DeadLetters of ``source`` (the node id) through ``sink``; ``counts["dead_letters"]`` counts them."""

    def __init__(self, sink: EventSink, source: str) -> None:
        self.sink = sink
        self.source = source
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}

    def send(
        self, topic: str, payload: bytes, reason: str, ack: Callable[[], None] | None = None, block: bool = True
    ) -> None:
        """Queues a dead letter; ``ack`` runs once it is spooled. Unless ``block``, a full sink drops it."""
        log.warning("dead letter from %s: %s", topic, reason)
        self.counts["dead_letters"] += 1
        letter = DeadLetter(topic=topic, payload=payload, reason=reason, source=self.source)
        self.sink.put(Outgoing("deadletters", lambda: encode("deadletters", letter), ack), block=block)

    def due(self, topic: str, every_s: float) -> bool:
        """Whether a rate-limited dead letter of ``topic`` may go now (and, if so, notes that it went)."""
        last = self._last.get(topic)
        if last is not None and time.monotonic() - last < every_s:
            return False
        self._last[topic] = time.monotonic()
        return True
