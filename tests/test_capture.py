"""Camera sources against the real GStreamer RTSP camera and the real footage: rate, drops, outages, files."""

from __future__ import annotations

import itertools
import os
import queue
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from conftest import eventually
from pydantic import ValidationError
from vtest import VTEST

from alerts.core.models import Event, EventKind, EventState, Place, Severity
from deploy.local.services import Service, start_rtsp
from ingest.capture import CameraSource, CaptureConfig, Frame, backoff_delay, redact

VTEST_FRAMES = 795
SITE = Place(sub_district="north", community="c1", grid="g1", site="willow-court")


@contextmanager
def camera(url: str, **settings: Any) -> Iterator[tuple[CameraSource, queue.Queue[Event]]]:
    events: queue.Queue[Event] = queue.Queue()
    source = CameraSource(
        "gate", CaptureConfig(url=url, **settings), place=SITE, node_id="node-1", name="Gate", on_event=events.put
    )
    with source:
        yield source, events


def take(source: CameraSource) -> Frame:
    frame = source.get(timeout=1)
    assert frame is not None, "no frame within a second"
    return frame


def pid(service: Service) -> int:
    assert service.proc is not None
    return service.proc.pid


def drain(events: queue.Queue[Event]) -> list[Event]:
    got = []
    while not events.empty():
        got.append(events.get_nowait())
    return got


def test_frames_arrive_in_real_time_and_a_slow_consumer_causes_counted_drops(rtsp_camera: Service) -> None:
    with camera(rtsp_camera.url, buffer_size=2) as (source, events):
        first = source.get(timeout=5)
        assert first is not None and first.camera_id == "gate"
        assert first.image.shape == (576, 768, 3) and (first.width, first.height) == (768, 576)
        assert first.image.std() > 10, "a real picture"
        # A consumer that takes 0.5 s per frame: the reader keeps pace with the camera and drops instead.
        consumed = [first]
        start = time.monotonic()
        while time.monotonic() - start < 3:
            time.sleep(0.5)
            frame = source.get(timeout=1)
            assert frame is not None
            consumed.append(frame)
        stats = source.stats()
        newest = source.latest()
    assert newest is not None and newest.seq >= stats.frames_read, "latest() is the newest frame, consumed or not"
    assert 8 < stats.fps < 12, stats
    assert stats.online and stats.last_frame_age_s is not None and stats.last_frame_age_s < 0.5
    assert stats.frames_read >= 30, stats
    # Every frame read was consumed, dropped, or is still in the buffer of two.
    assert 0 <= stats.frames_read - len(consumed) - stats.frames_dropped <= 2, stats
    assert stats.frames_dropped > 20, stats
    seqs = [f.seq for f in consumed]
    assert seqs == sorted(seqs) and seqs[-1] - seqs[0] > len(seqs), "skipped frames show as gaps"
    assert all(b.monotonic > a.monotonic and b.ts > a.ts for a, b in itertools.pairwise(consumed))
    assert stats.reconnects == 0 and drain(events) == []


def test_a_killed_camera_goes_offline_once_and_comes_back_on_the_same_port(rtsp_camera: Service, footage: Path) -> None:
    grace = 2.0
    settings = {"stale_after_s": 0.5, "offline_grace_s": grace, "backoff_min_s": 0.1, "backoff_max_s": 0.4}
    with camera(rtsp_camera.url, **settings) as (source, events):
        eventually(lambda: source.stats().frames_read >= 5)
        rtsp_camera.stop()
        killed = time.monotonic()
        offline = events.get(timeout=grace + 2)
        took = time.monotonic() - killed
        assert grace - 0.3 < took < grace + 1.0, took
        assert (offline.kind, offline.type, offline.state) == (EventKind.TROUBLE, "camera_offline", EventState.START)
        assert offline.severity is Severity.MAJOR and offline.source == "node-1"
        assert offline.place == SITE.with_device("gate") and offline.title == "Camera Gate offline"
        assert not source.stats().online
        # Retries go on, and no second START for the same outage.
        time.sleep(1.0)
        assert events.empty()
        assert source.stats().reconnects >= 2
        read_before = source.stats().frames_read

        with start_rtsp(footage, rtsp_camera.folder, port=rtsp_camera.port):
            back = events.get(timeout=5)
            assert (back.type, back.state, back.title) == ("camera_offline", EventState.END, "Camera Gate back online")
            assert back.dedup_key == offline.dedup_key
            eventually(lambda: source.stats().frames_read >= read_before + 10)
            stats = source.stats()
            assert stats.online and 8 < stats.fps < 12, stats
            assert events.empty()


def test_a_frozen_camera_is_reported_stale_while_the_read_blocks_and_stop_does_not_hang(
    rtsp_camera: Service,
) -> None:
    settings = {"stale_after_s": 0.5, "offline_grace_s": 1.5, "read_timeout_s": 4.0, "open_timeout_s": 2.0}
    try:
        with camera(rtsp_camera.url, backoff_min_s=0.1, backoff_max_s=0.2, **settings) as (source, events):
            eventually(lambda: source.stats().frames_read >= 5)
            # SIGSTOP freezes the server with its connection open: the next read blocks until its timeout.
            os.kill(pid(rtsp_camera), signal.SIGSTOP)
            eventually(lambda: not source.stats().online, timeout=1.5)
            offline = events.get(timeout=2.5)
            assert offline.state is EventState.START
            assert source.stats().reconnects == 0, "the watchdog reported it while the read was still blocked"
            stopping = time.monotonic()
            source.stop()
            assert time.monotonic() - stopping < settings["read_timeout_s"] + 1.5
            assert drain(events) == []
    finally:
        os.kill(pid(rtsp_camera), signal.SIGCONT)


def test_a_frozen_camera_is_reopened_and_comes_back(rtsp_camera: Service) -> None:
    settings = {"stale_after_s": 0.5, "offline_grace_s": 1.0, "read_timeout_s": 1.0, "open_timeout_s": 1.0}
    try:
        with camera(rtsp_camera.url, backoff_min_s=0.1, backoff_max_s=0.2, **settings) as (source, events):
            eventually(lambda: source.stats().frames_read >= 5)
            os.kill(pid(rtsp_camera), signal.SIGSTOP)
            assert events.get(timeout=3).state is EventState.START
            eventually(lambda: source.stats().reconnects >= 1, timeout=3)
            os.kill(pid(rtsp_camera), signal.SIGCONT)
            assert events.get(timeout=8).state is EventState.END
            read = source.stats().frames_read
            eventually(lambda: source.stats().frames_read >= read + 5)
    finally:
        os.kill(pid(rtsp_camera), signal.SIGCONT)


@pytest.mark.slow
def test_a_looping_file_goes_past_its_end_and_a_plain_one_ends(footage: Path) -> None:
    with camera(str(VTEST), loop=True, file_fps=0, buffer_size=1000) as (source, events):
        eventually(lambda: source.stats().frames_read > VTEST_FRAMES + 50, timeout=15)
        assert not source.ended and source.stats().reconnects == 0
        frames = [take(source) for _ in range(VTEST_FRAMES + 10)]
        assert [f.seq for f in frames] == list(range(1, VTEST_FRAMES + 11))
        # Past the end the picture starts again: the first frame of the second pass is the first frame.
        assert (frames[VTEST_FRAMES].image == frames[0].image).all()
        assert not (frames[VTEST_FRAMES - 1].image == frames[0].image).all()
    with camera(str(footage), file_fps=0, stale_after_s=0.5, offline_grace_s=0.5) as (source, events):
        eventually(lambda: source.ended, timeout=15)
        assert source.stats().frames_read == VTEST_FRAMES and source.stats().reconnects == 0
        assert source.get(timeout=1) is not None and source.get(timeout=1) is not None
        assert source.get(timeout=5) is None, "an ended file does not make the consumer wait"
        time.sleep(1.0)
        assert events.empty(), "a file that ended is not a camera offline"


def test_a_file_plays_at_its_own_rate_when_asked() -> None:
    with camera(str(VTEST)) as (source, _):
        time.sleep(2.0)
        stats = source.stats()
    # vtest.avi declares 10 fps: about 20 frames in 2 s, not the 795 it could decode in that time.
    assert 17 <= stats.frames_read <= 23 and 8 < stats.fps < 12, stats


def test_settings_refuse_mistakes_and_backoff_grows_with_jitter() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CaptureConfig(url="rtsp://cam/1", read_timeout=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="files only"):
        CaptureConfig(url="rtsp://cam/1", loop=True)
    with pytest.raises(ValidationError, match="backoff_min_s"):
        CaptureConfig(url="rtsp://cam/1", backoff_min_s=10, backoff_max_s=1)
    with pytest.raises(ValidationError, match="offline_grace_s"):
        CaptureConfig(url="rtsp://cam/1", stale_after_s=10, offline_grace_s=5)
    settings = CaptureConfig(url="rtsp://cam/1", backoff_min_s=1, backoff_max_s=8)
    delays = [[backoff_delay(settings, attempt) for _ in range(50)] for attempt in range(6)]
    assert all(0.5 <= d <= 1 for d in delays[0]) and all(4 <= d <= 8 for d in delays[5])
    assert len(set(delays[5])) > 40, "jitter, so cameras do not retry in step"
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"


def clients_of(port: int) -> int:
    """Established TCP connections to ``port`` on this machine, counted from the client's side."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                remote, state = row.split()[2:4]
                count += state == "01" and int(remote.rsplit(":", 1)[1], 16) == port
    return count


class Packets:
    """A packet sink that keeps what it was told; ``fail`` makes it raise on every packet."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.opens = self.closes = 0
        self.keys: list[bool] = []

    def opened(self, stream: av.VideoStream) -> None:
        self.opens += 1

    def packet(self, packet: av.Packet, wall: float) -> None:
        self.keys.append(packet.is_keyframe)
        if self.fail:
            raise RuntimeError("a sink that fails")

    def closed(self) -> None:
        self.closes += 1


def test_one_connection_feeds_the_frames_and_the_packet_sinks(rtsp_camera: Service) -> None:
    kept, failing = Packets(), Packets(fail=True)
    source = CameraSource("gate", CaptureConfig(url=rtsp_camera.url), place=SITE, node_id="node-1")
    source.attach(kept)
    source.attach(failing)
    with source:
        eventually(lambda: source.stats().frames_read >= 25, timeout=10)
        assert clients_of(rtsp_camera.port) == 1, "the sinks ride on the capture's own connection"
        frame = take(source)
    assert len(kept.keys) >= 25 and kept.keys.count(True) >= 2, "every packet, key frames among them"
    assert abs(len(failing.keys) - len(kept.keys)) <= 1, "a sink that raises is told of every packet all the same"
    assert source.stats().sink_failures == len(failing.keys) and source.stats().damaged == 0
    assert (kept.opens, kept.closes) == (1, 1)
    # The grey plane is the picture's luma: what OpenCV computes from the BGR image, within rounding and range.
    grey, image = frame.grey, frame.image
    assert grey.shape == (576, 768) and image.shape == (576, 768, 3)
    from_bgr = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.abs(grey - (from_bgr * 219 / 255 + 16)).mean() < 3
