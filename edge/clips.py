"""Video clips of security alerts, cut from each camera's compressed stream without re-encoding.

A :class:`ClipRecorder` per camera takes the compressed packets of the camera's one connection as the camera's
source reads them (it is the source's packet sink, ``CameraSource.attach``), and keeps the last ``pre_roll_s``
seconds of them in a ring that always starts at a key frame. When the sink stores a security alert of that
camera (``mark``), the recorder starts a clip at the newest key frame at or before ``alert.ts - pre_roll_s``
and goes on taking packets until the alert's end plus ``post_roll_s``, at most ``max_s`` from the clip's
start; it then remuxes the packets into an MP4 with ``movflags=faststart`` (the index first, so a browser
plays it while it downloads), like ``ffmpeg -c copy``, and hands it to the clip spool (``edge.clip_upload``).
Cuts snap to key frames: a clip starts up to one key frame interval before ``alert.ts - pre_roll_s``. A cut
runs on the source's reader thread (a 40 s clip takes under 0.1 s, ``bench/bench_clips.py``), which the
stream's socket buffer covers.

No second connection: cheap cameras allow one or two clients, and a second connection's demuxing cost about a
quarter of the detector's looks on a node of 16 cameras (``bench/bench_video.py``, section 5).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import av
from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.models import Alert, EventKind, Severity

log = logging.getLogger(__name__)

_SEVERITY_ORDER = list(Severity)


class ClipsConfig(ConfigModel):
    """Clips of security alerts: how long, where they wait, and where they go."""

    pre_roll_s: float = Field(default=5.0, ge=0, title="Pre-roll", description="Seconds kept before the alert.")
    post_roll_s: float = Field(default=5.0, ge=0, title="Post-roll", description="Seconds kept after its end.")
    max_s: float = Field(default=60.0, gt=0, title="Longest clip", description="A clip ends this long after it starts.")
    spool: Path = Field(
        default=Path("/var/lib/patrolnet/clips"),
        title="Clip spool",
        description="Folder where clips wait until the centre confirms it stored them whole.",
    )
    max_spool_bytes: int = Field(
        default=2_000_000_000,
        gt=0,
        title="Spool size",
        description="Over this, the oldest clips of non-alarm alerts are deleted; an alarm's clip never is.",
    )
    alarm_severity: Severity = Field(
        default=Severity.MAJOR,
        title="Alarm severity",
        description="Alerts of this severity or above are alarms: their clips are kept until the centre has them.",
    )
    api_url: str = Field(
        default="",
        title="Centre API",
        description="http(s)://host[:port] of the alert API clips are uploaded to; empty keeps them on the node. "
        "The edge API key comes from PATROLNET_EDGE_API_KEY (or PATROLNET_EDGE_API_KEY_FILE).",
    )
    chunk_bytes: int = Field(
        default=1_000_000, gt=0, le=1_048_576, title="Chunk size", description="Bytes per upload request."
    )
    retry_max_s: float = Field(
        default=60.0, gt=0, title="Longest retry wait", description="Failed uploads wait 1, 2, 4 ... up to this (s)."
    )


@dataclass(frozen=True)
class ClipMeta:
    """What the centre needs to know of a clip besides its bytes."""

    id: UUID
    alert_id: UUID
    camera: str
    kind: EventKind
    alarm: bool
    started_at: datetime
    """Wall time of its first packet (a key frame)."""
    ended_at: datetime
    bytes: int
    sha256: str


@dataclass
class _Packet:
    packet: av.Packet
    wall: float
    """``time.time()`` when it was read."""


@dataclass
class _Recording:
    alert_id: UUID
    kind: EventKind
    alarm: bool
    until: float
    """Wall time up to which packets are taken."""
    limit: float
    """``until`` never goes past this: the clip's start plus ``max_s``."""
    packets: list[_Packet] = field(default_factory=list)


def write_mp4(path: Path, template: av.VideoStream, packets: list[av.Packet]) -> None:
    """Remuxes packets (from a key frame on) into an MP4 with the index first; timestamps start at 0.

    The packets are copied, not changed: overlapping clips share them, and muxing rescales a packet in place.
    """
    timed = [p for p in packets if p.dts is not None and p.pts is not None]
    base = timed[0].dts or 0
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(template)
        for packet in timed:
            copy = av.Packet(bytes(packet))
            copy.pts, copy.dts = (packet.pts or 0) - base, (packet.dts or 0) - base
            copy.time_base, copy.is_keyframe, copy.stream = packet.time_base, packet.is_keyframe, stream
            out.mux(copy)


Deliver = Callable[[ClipMeta, Path], None]
"""Takes a finished clip (its file is in the spool folder, named ``<id>.mp4.tmp``) into the spool."""


class ClipRecorder:
    """One camera's packet ring and clips in the making, a :class:`~ingest.capture.PacketSink`; see the module
    docstring."""

    def __init__(self, camera_id: str, settings: ClipsConfig, deliver: Deliver) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.deliver = deliver
        self.packets = 0
        self.clips = 0
        self._ring: deque[_Packet] = deque()
        self._recordings: dict[UUID, _Recording] = {}
        self._done: set[UUID] = set()
        self._template: av.VideoStream | None = None
        self._lock = threading.Lock()

    def mark(self, alert: Alert) -> None:
        """Starts (or ends) the clip of a security alert of this camera; other alerts are ignored. Thread-safe."""
        if alert.kind is not EventKind.SECURITY or alert.place.device != self.camera_id:
            return
        with self._lock:
            if alert.id in self._done:
                return
            recording = self._recordings.get(alert.id) or self._begin(alert)
            if recording is not None and not alert.active:
                end = (alert.cleared_at or alert.last_seen).timestamp()
                recording.until = min(recording.limit, end + self.settings.post_roll_s)

    def _begin(self, alert: Alert) -> _Recording | None:
        start = alert.ts.timestamp() - self.settings.pre_roll_s
        keys = [i for i, p in enumerate(self._ring) if p.packet.is_keyframe]
        if not keys:
            log.warning("camera %s: no video kept yet; no clip of alert %s", self.camera_id, alert.id)
            return None
        first = max((i for i in keys if self._ring[i].wall <= start), default=keys[0])
        packets = list(self._ring)[first:]
        alarm = _SEVERITY_ORDER.index(alert.severity) >= _SEVERITY_ORDER.index(self.settings.alarm_severity)
        limit = packets[0].wall + self.settings.max_s
        recording = _Recording(alert.id, alert.kind, alarm, until=limit, limit=limit, packets=packets)
        self._recordings[alert.id] = recording
        log.info("camera %s: clip of alert %s from %.1f s before it", self.camera_id, alert.id,
                 alert.ts.timestamp() - packets[0].wall)  # fmt: skip
        return recording

    # The packet sink: called on the camera source's reader thread.

    def opened(self, stream: av.VideoStream) -> None:
        self._template = stream

    def packet(self, packet: av.Packet, wall: float) -> None:
        self._take(_Packet(packet, wall))

    def closed(self) -> None:
        """The connection ended: what is being recorded is cut now, shorter, rather than lost."""
        with self._lock:
            recordings = list(self._recordings.values())
            self._done.update(self._recordings)
            self._recordings.clear()
            self._ring.clear()
        for recording in recordings:
            self._cut(recording)

    def _take(self, item: _Packet) -> None:
        finished = []
        with self._lock:
            self.packets += 1
            self._ring.append(item)
            self._trim(item.wall)
            for alert_id, recording in list(self._recordings.items()):
                if item.wall > recording.until:
                    finished.append(self._recordings.pop(alert_id))
                    self._done.add(alert_id)
                else:
                    recording.packets.append(item)
        for recording in finished:
            self._cut(recording)

    def _trim(self, now: float) -> None:
        """Drops what no clip can need: the ring keeps one key frame at or before ``now - pre_roll_s``."""
        horizon = now - self.settings.pre_roll_s
        while True:
            second = next((i for i, p in enumerate(self._ring) if i > 0 and p.packet.is_keyframe), None)
            if second is None or self._ring[second].wall > horizon:
                return
            for _ in range(second):
                self._ring.popleft()

    def _cut(self, recording: _Recording) -> None:
        if not recording.packets or self._template is None:
            return
        clip_id = uuid4()
        path = self.settings.spool / f"{clip_id}.mp4.tmp"
        try:
            write_mp4(path, self._template, [p.packet for p in recording.packets])
            data = path.read_bytes()
        except (av.FFmpegError, OSError):
            log.exception("camera %s: could not write the clip of alert %s", self.camera_id, recording.alert_id)
            path.unlink(missing_ok=True)
            return
        meta = ClipMeta(
            id=clip_id,
            alert_id=recording.alert_id,
            camera=self.camera_id,
            kind=recording.kind,
            alarm=recording.alarm,
            started_at=datetime.fromtimestamp(recording.packets[0].wall, UTC),
            ended_at=datetime.fromtimestamp(recording.packets[-1].wall, UTC),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        self.clips += 1
        self.deliver(meta, path)
