"""Camera sources: frames from an RTSP camera, or a video file, read on a thread of their own.

A :class:`CameraSource` reads one camera with PyAV (FFmpeg's demuxer and decoder) and never stops
draining it, because a live stream does not wait: a reader that pauses falls behind real time.
Frames reach the consumer through a small buffer that drops the oldest frame when full and
counts what it drops, so the reader never blocks on a slow consumer.

One connection a camera serves everything the node does with it (cheap cameras allow one or two
clients): the compressed packets go to the sources's packet sinks (the clip recorder keeps them for
clips, ``attach``) and are decoded once for the detector. A :class:`Frame` holds the decoder's
picture: its grey plane (what the motion gate and the tamper check look at) costs nothing, and the
BGR image is made only when something asks for it (the detector, a snapshot), so the frames of a
quiet camera are never converted.

When the stream dies (a read fails) or freezes (a read takes longer than ``stale_after_s``),
the source closes it and reopens it with exponential backoff and jitter. A watchdog
thread, which a reader stuck in a blocking read cannot hold up, tracks the age of the last good
frame: after ``offline_grace_s`` without frames it emits one ``camera_offline`` trouble Event, and
the first frame after that emits the matching END event.

Streams open with :data:`FFMPEG_OPTIONS` (RTSP over TCP, short probe), which cuts the time to the
first frame from about 1.9 s to 0.14 s.

With a camera on the network (not run here)::

    events = queue.Queue()
    settings = CaptureConfig(url="rtsp://user:secret@10.0.0.5:554/stream1")
    with CameraSource("gate", settings, place=site_place, node_id="node-1", on_event=events.put) as cam:
        frame = cam.get(timeout=1.0)  # None if no frame came within a second
        print(frame.grey.shape, frame.image.shape, cam.stats())

Settings are checked when they are made:

    >>> settings = CaptureConfig(url="/srv/replays/gate.mp4", loop=True, file_fps=0)
    >>> settings.is_file, settings.stale_after_s
    (True, 3.0)
    >>> CaptureConfig(url="rtsp://10.0.0.5/stream1", loop=True)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    pydantic_core._pydantic_core.ValidationError: loop applies to files only
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import av
import numpy as np
from pydantic import Field, model_validator

from alerts.core.config import ConfigModel
from alerts.core.debounce import Debounce
from alerts.core.models import Event, EventKind, EventState, Place, Severity, utc_now

log = logging.getLogger(__name__)

FFMPEG_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768"}
"""FFmpeg's options for a stream: TCP, and a short stream probe."""
_Y_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
"""8-bit pixel formats whose first plane is the picture in grey (luma)."""

OFFLINE_TYPE = "camera_offline"
_FPS_WINDOW = 20
"""Frames over which the current rate is measured: two seconds at 10 fps."""


class CaptureConfig(ConfigModel):
    """How to read one camera, and when to call it offline."""

    url: str = Field(
        min_length=1,
        title="URL",
        description="rtsp://[user:password@]host[:port]/path of the camera, or a video file for tests and replays.",
    )
    open_timeout_s: float = Field(
        default=5.0, gt=0, title="Open timeout", description="Longest wait for a stream to open (s)."
    )
    read_timeout_s: float = Field(
        default=3.0,
        gt=0,
        title="Read timeout",
        description="Longest a single read may block on a silent stream (s); a frozen stream is reopened after it.",
    )
    stale_after_s: float = Field(
        default=3.0,
        gt=0,
        title="Stale after",
        description="No frame for this long and the camera counts as down, even while a read still blocks; "
        "a read that took this long means a frozen stream, which is reopened (s). Must exceed the frame interval.",
    )
    offline_grace_s: float = Field(
        default=30.0,
        gt=0,
        title="Offline grace",
        description="How long the camera may go without frames before a camera-offline trouble Event (s).",
    )
    backoff_min_s: float = Field(
        default=0.5, gt=0, title="Minimum backoff", description="First wait before reopening a lost stream (s)."
    )
    backoff_max_s: float = Field(
        default=30.0, gt=0, title="Maximum backoff", description="The wait doubles per failed reopen up to this (s)."
    )
    buffer_size: int = Field(
        default=2,
        ge=1,
        title="Buffer size",
        description="Frames held for the consumer; when full, the oldest is dropped and counted.",
    )
    loop: bool = Field(
        default=False, title="Loop", description="Files only: start again at the end, for replays that never end."
    )
    decode_threads: int = Field(
        default=1,
        ge=0,
        title="Decoding threads",
        description="FFmpeg threads decoding this camera; 0 lets FFmpeg choose. One costs the least CPU a frame "
        "when many cameras share a few cores; a high-resolution main stream may need more.",
    )
    file_fps: float | None = Field(
        default=None,
        ge=0,
        title="File frame rate",
        description="Files only: frames per second to play at; unset plays at the rate the file declares, "
        "0 as fast as it decodes.",
    )

    @property
    def is_file(self) -> bool:
        return "://" not in self.url

    @model_validator(mode="after")
    def _consistent(self) -> CaptureConfig:
        if not self.is_file and (self.loop or self.file_fps is not None):
            raise ValueError("loop and file_fps apply to files only")
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        if self.offline_grace_s < self.stale_after_s:
            raise ValueError("offline_grace_s must be at least stale_after_s")
        return self


class Frame:
    """One decoded picture and where and when it came from.

    ``grey`` is a view of the decoder's luma plane; ``image`` (BGR) is converted from the picture the first
    time it is asked for, once, whichever thread asks.
    """

    __slots__ = ("_image", "_lock", "_picture", "camera_id", "height", "monotonic", "seq", "ts", "width")

    def __init__(self, camera_id: str, seq: int, monotonic: float, ts: datetime, picture: av.VideoFrame) -> None:
        self.camera_id = camera_id
        self.seq = seq
        """Counts up from 1 per source, across reconnects; a gap means frames were dropped."""
        self.monotonic = monotonic
        """``time.monotonic()`` when it was read: for ages and intervals."""
        self.ts = ts
        """UTC time when it was read: for events."""
        self.width = picture.width
        self.height = picture.height
        self._picture = picture
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def grey(self) -> np.ndarray:
        """The picture in grey, height x width, uint8: the luma plane itself where the format allows."""
        picture = self._picture
        if picture.format.name not in _Y_FIRST:
            return picture.to_ndarray(format="gray")
        plane = picture.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        return rows[:, : plane.width]

    @property
    def image(self) -> np.ndarray:
        """BGR, height x width x 3, made on first use (not copied after)."""
        return self.bgr()

    def bgr(self) -> np.ndarray:
        """The BGR image, converted from the picture once."""
        with self._lock:
            if self._image is None:
                self._image = self._picture.to_ndarray(format="bgr24")
            return self._image


class PacketSink(Protocol):
    """Takes a camera's compressed packets as they are read, on the source's reader thread (be quick)."""

    def opened(self, stream: av.VideoStream) -> None:
        """A connection opened on this stream; its packets follow."""

    def packet(self, packet: av.Packet, wall: float) -> None:
        """One packet with a timestamp, and ``time.time()`` when it was read."""

    def closed(self) -> None:
        """The connection ended (a failure, a freeze, the end of a file, or stop)."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """What one camera source has done so far, and how it is now."""

    frames_read: int
    frames_dropped: int
    reconnects: int
    """Reopens after a lost, frozen or failed stream (not the loops of a file)."""
    fps: float
    """Over the last few frames; 0 while the stream is stale."""
    last_frame_age_s: float | None
    """None before the first frame."""
    online: bool
    damaged: int = 0
    """Packets the decoder refused (their pictures are lost; FFmpeg conceals what it can in the next ones)."""
    sink_failures: int = 0
    """Calls of a packet sink (the clip recorder) that raised."""


def backoff_delay(settings: CaptureConfig, attempt: int) -> float:
    """Wait before reopen number ``attempt`` (from 0): doubling, capped, with jitter so cameras do not retry in step."""
    ceiling = min(settings.backoff_max_s, settings.backoff_min_s * 2 ** min(attempt, 32))
    return random.uniform(ceiling / 2, ceiling)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


class CameraSource:
    """Reads one camera on a thread of its own; see the module docstring.

    ``on_event`` receives the camera-offline START and END events, from the source's threads; it
    must be quick (``queue.Queue.put`` is). The source can be started once.
    """

    def __init__(
        self,
        camera_id: str,
        settings: CaptureConfig,
        *,
        place: Place,
        node_id: str,
        name: str = "",
        on_event: Callable[[Event], Any] | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.place = place.with_device(camera_id)
        self.node_id = node_id
        self.name = name or camera_id
        self._on_event = on_event
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._buffer: deque[Frame] = deque(maxlen=settings.buffer_size)
        self._times: deque[float] = deque(maxlen=_FPS_WINDOW)
        self._latest: Frame | None = None
        self._last_frame: float | None = None
        self._started = 0.0
        self._frames_read = self._frames_dropped = self._reconnects = 0
        self._ended = False
        self._event_lock = threading.Lock()
        self._sinks: list[PacketSink] = []
        self._failing: set[int] = set()
        self._damaged = self._sink_failures = 0
        self._online = Debounce(0.0, settings.offline_grace_s)
        """Frames are its sightings: offline after the grace without one, online again at the next."""
        self._threads = [
            threading.Thread(target=self._read_forever, name=f"capture-{camera_id}", daemon=True),
            threading.Thread(target=self._watch, name=f"capture-watchdog-{camera_id}", daemon=True),
        ]

    def attach(self, sink: PacketSink) -> None:
        """Hands every packet read from now on to ``sink`` too (before ``start``; e.g. a clip recorder)."""
        self._sinks.append(sink)

    def start(self) -> None:
        if self._started:
            raise RuntimeError(f"camera {self.camera_id} was started already")
        self._started = time.monotonic()
        # The grace runs from the start, as if a frame had come then: a camera that never answers goes offline too.
        self._online.update(True, self._started)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stops reading; returns within the longest timeout even if a read is stuck."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # A read blocked in FFmpeg returns only at its timeout; wait for it, but never forever.
        deadline = time.monotonic() + max(self.settings.open_timeout_s, self.settings.read_timeout_s) + 1.0
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("camera %s: %s still busy after stop; it ends on its own", self.camera_id, thread.name)

    def __enter__(self) -> CameraSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ended(self) -> bool:
        """True once a file without ``loop`` has been read to its end."""
        return self._ended

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest buffered frame; None after ``timeout`` seconds without one, or once stopped or ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer or self._stop.is_set() or self._ended, timeout):
                return None
            return self._buffer.popleft() if self._buffer else None

    def latest(self) -> Frame | None:
        """The newest frame read, consumed or not, e.g. for a snapshot."""
        return self._latest

    def stats(self) -> CaptureStats:
        with self._cond:
            last, times = self._last_frame, list(self._times)
            counts = self._frames_read, self._frames_dropped, self._reconnects
        age = None if last is None else time.monotonic() - last
        online = age is not None and age < self.settings.stale_after_s
        fps = (len(times) - 1) / (times[-1] - times[0]) if online and len(times) > 1 and times[-1] > times[0] else 0.0
        damage = {"damaged": self._damaged, "sink_failures": self._sink_failures}
        return CaptureStats(*counts, fps=fps, last_frame_age_s=age, online=online, **damage)

    # The reader thread.

    def _read_forever(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            got = self._session()
            if self._stop.is_set():
                break
            if got and self.settings.is_file:
                if not self.settings.loop:
                    self._finish()
                    break
                continue
            attempt = 0 if got else attempt + 1
            delay = backoff_delay(self.settings, attempt)
            with self._cond:
                self._reconnects += 1
                # The rate after a reconnect must not average over the outage.
                self._times.clear()
            log.info("camera %s: reopening in %.1f s", self.camera_id, delay)
            self._stop.wait(delay)

    def _session(self) -> int:
        """Opens the stream once and reads it until it fails; returns how many frames it read."""
        container = self._open()
        if container is None:
            return 0
        with container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.settings.decode_threads
            self._failing.clear()
            self._tell_sinks("opened", stream)
            try:
                return self._drain(container, stream)
            finally:
                self._tell_sinks("closed")

    def _open(self) -> av.container.InputContainer | None:
        timeouts = (self.settings.open_timeout_s, self.settings.read_timeout_s)
        options = {} if self.settings.is_file else FFMPEG_OPTIONS
        try:
            container = av.open(self.settings.url, options=options, timeout=timeouts)
        except (av.FFmpegError, OSError) as exc:
            log.warning("camera %s: cannot open %s: %s", self.camera_id, redact(self.settings.url), exc)
            return None
        if not container.streams.video:
            log.warning("camera %s: %s has no video", self.camera_id, redact(self.settings.url))
            container.close()
            return None
        log.info("camera %s: opened %s", self.camera_id, redact(self.settings.url))
        return container

    def _frame_interval(self, stream: av.VideoStream) -> float:
        """Seconds between frames to pace a file at; 0 for streams, which pace themselves."""
        if not self.settings.is_file:
            return 0.0
        fps = self.settings.file_fps if self.settings.file_fps is not None else float(stream.average_rate or 0)
        return 1.0 / fps if fps > 0 else 0.0

    def _drain(self, container: av.container.InputContainer, stream: av.VideoStream) -> int:
        """Reads until the stream fails, freezes or the source stops; returns how many frames it read."""
        interval = self._frame_interval(stream)
        due = time.monotonic()
        count = 0
        packets = container.demux(stream)
        while not self._stop.is_set():
            before = time.monotonic()
            try:
                packet = next(packets, None)
            except (av.FFmpegError, OSError) as exc:
                # A dropped connection, or a read that outwaited read_timeout_s.
                log.warning("camera %s: read failed after %d frames: %s", self.camera_id, count, exc)
                return count
            now = time.monotonic()
            if packet is None:
                if not (self.settings.is_file and count):
                    log.warning("camera %s: stream ended after %d frames", self.camera_id, count)
                return count
            if now - before > self.settings.stale_after_s:
                log.warning("camera %s: stream froze for %.1f s", self.camera_id, now - before)
                return count
            if packet.dts is not None:
                self._tell_sinks("packet", packet, time.time())
            for picture in self._decode(packet):
                self._deliver(picture, time.monotonic())
                count += 1
                if interval:
                    due = max(due + interval, now)
                    self._stop.wait(due - time.monotonic())
        return count

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return [p for p in packet.decode() if isinstance(p, av.VideoFrame)]
        except av.error.InvalidDataError:
            # A damaged packet costs its picture, not the connection.
            self._damaged += 1
            return []

    def _tell_sinks(self, what: str, *args: Any) -> None:
        for sink in self._sinks:
            try:
                getattr(sink, what)(*args)
            except Exception:
                # A failing sink (a clip recorder) costs what it keeps, never the camera's frames; said once a
                # connection, not ten times a second.
                self._sink_failures += 1
                if id(sink) not in self._failing:
                    self._failing.add(id(sink))
                    log.exception("camera %s: packet sink %s failed on %s", self.camera_id, type(sink).__name__, what)

    def _deliver(self, picture: av.VideoFrame, now: float) -> None:
        with self._cond:
            self._frames_read += 1
            frame = Frame(self.camera_id, self._frames_read, now, utc_now(), picture)
            if len(self._buffer) == self._buffer.maxlen:
                self._frames_dropped += 1
            self._buffer.append(frame)
            self._latest = frame
            self._last_frame = now
            self._times.append(now)
            self._cond.notify()
        self._announce_back(now)

    def _finish(self) -> None:
        log.info("camera %s: end of %s", self.camera_id, redact(self.settings.url))
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # The watchdog thread.

    def _watch(self) -> None:
        tick = min(0.25, self.settings.stale_after_s / 4)
        while not self._stop.wait(tick):
            if self._ended:
                return
            self._announce_offline()

    def _announce_offline(self) -> None:
        with self._event_lock:
            now = time.monotonic()
            if self._online.update(None, now) is not False:
                return
            age = now - self._online.last_seen
            log.warning("camera %s: no frame for %.1f s, offline", self.camera_id, age)
            attributes = {"camera": self.camera_id, "last_frame_age_s": round(age, 1), "reconnects": self._reconnects}
            self._emit(EventState.START, f"Camera {self.name} offline", attributes)

    def _announce_back(self, now: float) -> None:
        with self._event_lock:
            offline_s = now - self._online.last_seen
            if not self._online.update(True, now):
                return
            log.info("camera %s: back online after %.1f s", self.camera_id, offline_s)
            attributes = {"camera": self.camera_id, "offline_s": round(offline_s, 1), "reconnects": self._reconnects}
            self._emit(EventState.END, f"Camera {self.name} back online", attributes)

    def _emit(self, state: EventState, title: str, attributes: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        event = Event(
            kind=EventKind.TROUBLE,
            type=OFFLINE_TYPE,
            state=state,
            severity=Severity.MAJOR,
            place=self.place,
            source=self.node_id,
            title=title,
            attributes=attributes,
        )
        try:
            self._on_event(event)
        except Exception:
            log.exception("camera %s: the event consumer failed on %s", self.camera_id, title)
