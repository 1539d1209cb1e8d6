"""The RTSP camera stand-in: a real GStreamer RTSP server looping real footage, read by OpenCV."""

from __future__ import annotations

import os
import time

import cv2

from deploy.local.services import Service

os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;100000|probesize;32768")


def test_the_camera_streams_footage_in_real_time_and_stops_when_killed(rtsp_camera: Service) -> None:
    capture = cv2.VideoCapture(rtsp_camera.url, cv2.CAP_FFMPEG)
    assert capture.isOpened()
    ok, frame = capture.read()
    assert ok and frame.shape == (576, 768, 3)
    assert frame.std() > 10, "a real picture, not a flat test pattern"
    start = time.monotonic()
    for _ in range(20):
        ok, _ = capture.read()
        assert ok
    elapsed = time.monotonic() - start
    # vtest.avi is 10 fps and the server is live: 20 frames take about 2 s, not a burst.
    assert 1.2 < elapsed < 4.0, elapsed

    rtsp_camera.stop()
    deadline = time.monotonic() + 10
    while capture.read()[0]:
        assert time.monotonic() < deadline, "frames kept coming after the server was killed"
    capture.release()
