"""A node's answers to the centre's snapshot commands: a camera's picture now, through the spool.

The centre asks on ``patrolnet/v1/<site>/commands/snapshot/<node>`` (``alerts.core.protocol.snapshot_topic``) with
a ``SnapshotCommand`` (request id, camera). The node answers with a ``Snapshot`` on its ``snapshot`` uplink
channel: the camera's newest frame as a JPEG labelled with the camera and time, taken when the answer is made on
the event sink's thread (paho's thread, which hears the command, never encodes a picture or waits on disk), or
why there is none: no such camera on this node, no frame yet, or a newest frame older than ``STALE_S`` (the
camera is down). The answer goes through the spool like any message, so it survives an outage and is confirmed
end to end. A command that cannot be read is a dead letter. The same request asked again is answered again: the
centre keeps the first answer.

Example:
    >>> import numpy as np
    >>> jpeg = picture(np.zeros((1080, 1920, 3), np.uint8), "gate 08:00:00 UTC", max_bytes=20_000)
    >>> jpeg[:2] == b"\\xff\\xd8" and len(jpeg) <= 20_000
    True
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from pydantic import ValidationError

from alerts.core.models import SNAPSHOT_MAX_BYTES, Place, Snapshot, SnapshotCommand
from alerts.core.protocol import encode
from detectors.snapshot import mosaic
from edge.letters import DeadLetters
from edge.sink import EventSink, Outgoing
from ingest.capture import Frame

log = logging.getLogger(__name__)

STALE_S = 10.0
"""A newest frame older than this is no picture of now: the camera is down, and the answer says so."""
QUALITY = 85

Latest = Callable[[str], tuple[Frame, str] | None]
"""A camera's newest frame and its label (``edge.video.VideoPipeline.latest``); None when it has none."""


def picture(image: np.ndarray, label: str, max_bytes: int = SNAPSHOT_MAX_BYTES) -> bytes:
    """A labelled JPEG of ``image`` at its size, or halved until it fits in ``max_bytes``."""
    height = image.shape[0]
    while True:
        jpeg = mosaic([(image, label)], height=height, quality=QUALITY)
        if len(jpeg) <= max_bytes or height <= 60:
            return jpeg
        height //= 2


class SnapshotAnswers:
    """Answers snapshot commands (``handle``, on paho's thread) by queueing the answer on the event sink."""

    def __init__(self, node_id: str, site: Place, latest: Latest | None, sink: EventSink, letters: DeadLetters) -> None:
        self.node_id = node_id
        self.site = site
        self.latest = latest
        self.sink = sink
        self.letters = letters
        self.counts: Counter[str] = Counter()

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            command = SnapshotCommand.model_validate_json(payload)
        except (ValidationError, ValueError) as exc:
            self.counts["snapshot_commands_unreadable"] += 1
            self.letters.send(topic, payload, f"unreadable snapshot command ({exc})", block=False)
            return
        self.counts["snapshot_commands"] += 1
        self.sink.put(Outgoing("snapshot", lambda: encode("snapshot", self.answer(command))), block=False)

    def answer(self, command: SnapshotCommand) -> Snapshot:
        """The answer to ``command``, made now: the camera's newest frame, or why there is none."""
        place = self.site.with_device(command.camera)
        found = self.latest(command.camera) if self.latest else None
        error, jpeg, ts = "", None, datetime.now(UTC)
        if found is None:
            error = f"node {self.node_id} has no camera {command.camera!r} with a frame"
        elif (age := (ts - found[0].ts).total_seconds()) > STALE_S:
            error = f"camera {command.camera}'s newest frame is {age:.0f} s old"
        else:
            frame, label = found
            jpeg, ts = picture(frame.image, label), frame.ts
        if error:
            log.warning("snapshot request %s: %s", command.request_id, error)
        self.counts["snapshots_sent" if jpeg else "snapshots_refused"] += 1
        return Snapshot(request_id=command.request_id, node_id=self.node_id, place=place, jpeg=jpeg, error=error, ts=ts)
