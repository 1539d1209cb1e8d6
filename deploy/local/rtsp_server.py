"""A real RTSP camera stand-in: serves a raw H.264 file over RTSP and loops it forever.

Tests and the demo need a camera that behaves like one in the field: a live RTSP/H.264 stream
that never ends, shared by every client, at real-time rate. This script is that camera, built on
GStreamer's RTSP server from Debian. GStreamer's Python bindings exist only for Debian's own
interpreter, so it runs as a separate process:

    /usr/bin/python3 deploy/local/rtsp_server.py --file vtest.h264 --port 8554 [--path /cam]

It prints ``READY rtsp://HOST:PORT/PATH`` once it listens (``--port 0`` picks a free port and the
line tells which), and exits cleanly on SIGTERM or SIGINT.

The file must be an H.264 elementary stream without B-frames that starts with a key frame, e.g.
``ffmpeg -i in.avi -an -c:v libx264 -bf 0 -g 10 -pix_fmt yuv420p -f h264 out.h264``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from fractions import Fraction
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

log = logging.getLogger("patrolnet.rtsp_server")

# Caps of what the loader hands over: one complete frame per buffer, start codes kept.
_AU_CAPS = "video/x-h264,stream-format=byte-stream,alignment=au"


def load_access_units(path: str) -> tuple[list[Any], int, int]:
    """Split the file into one Gst.Buffer per frame, parsed once and kept in memory.

    Keeping the frames lets every loop restart with exact, self-made timestamps: a raw .h264 file
    carries none, and h264parse leaves the PTS unset, which clients see as a stuck clock.
    config-interval=-1 repeats SPS/PPS before every key frame so a client joining a shared stream
    mid-file can start decoding at the next key frame.
    """
    pipeline = Gst.parse_launch(
        f"filesrc name=src ! h264parse config-interval=-1 ! {_AU_CAPS} ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("src").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[Any] = []
    width = height = 0
    try:
        while True:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            if not frames:
                structure = sample.get_caps().get_structure(0)
                width = structure.get_int("width").value
                height = structure.get_int("height").value
            frames.append(sample.get_buffer())
        message = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if message is not None:
            error, debug = message.parse_error()
            raise RuntimeError(f"cannot read {path}: {error.message} ({debug})")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not frames:
        raise RuntimeError(f"no H.264 frames in {path}")
    if frames[0].has_flags(Gst.BufferFlags.DELTA_UNIT):
        log.warning("%s does not start with a key frame: every loop will show a glitch", path)
    return frames, width, height


class _Feeder:
    """Feeds one media's live appsrc with the frames, round and round, on a running clock."""

    def __init__(self, appsrc: Any, frames: list[Any], frame_ns: int) -> None:
        self._frames = frames
        self._frame_ns = frame_ns
        self._count = 0
        self._base_ns: int | None = None
        appsrc.connect("need-data", self._on_need_data)

    def _on_need_data(self, appsrc: Any, _length: int) -> None:
        # A live source stamps buffers in running time; start from the running time of the first
        # frame so the sinks neither wait nor drop. The sinks sync on these stamps, which is what
        # paces the stream at --fps; pushing one frame per request keeps the queue short.
        if self._base_ns is None:
            clock = appsrc.get_clock()
            self._base_ns = clock.get_time() - appsrc.get_base_time() if clock is not None else 0
        # A shallow copy shares the frame's memory; only the timestamps are new.
        buffer = self._frames[self._count % len(self._frames)].copy()
        # No B-frames, so presentation order is decoding order: PTS equals DTS.
        buffer.pts = buffer.dts = self._base_ns + self._count * self._frame_ns
        buffer.duration = self._frame_ns
        self._count += 1
        appsrc.emit("push-buffer", buffer)


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One shared live media per mount: every client sees the same frames at the same time."""

    def __init__(self, frames: list[Any], width: int, height: int, fps: Fraction) -> None:
        super().__init__()
        self._frames = frames
        self._frame_ns = int(Gst.SECOND / fps)
        caps = f"{_AU_CAPS},width={width},height={height},framerate={fps.numerator}/{fps.denominator}"
        # is-live: a camera cannot be paused or seeked, and the SDP says so (npt=now-).
        # config-interval=-1 also gives SPS/PPS in-band to clients whose decoder ignores the SDP.
        self.set_launch(
            f'( appsrc name=src is-live=true format=time caps="{caps}" '
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: Any, media: Any) -> None:
        appsrc = media.get_element().get_by_name("src")
        # The feeder lives as long as the appsrc's signal handler, i.e. as long as the media.
        _Feeder(appsrc, self._frames, self._frame_ns)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True, help="raw H.264 elementary stream without B-frames")
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--path", default="/cam", help="mount point (default /cam)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate to play at (default 10)")
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    Gst.init(None)
    try:
        frames, width, height = load_access_units(args.file)
    except (RuntimeError, GLib.Error) as exc:
        log.error("%s", exc)
        return 1
    fps = Fraction(args.fps).limit_denominator(1001)
    log.info("%s: %d frames, %dx%d, playing at %s fps", args.file, len(frames), width, height, fps)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, LoopingFactory(frames, width, height, fps))
    source_id = server.attach(None)
    if source_id == 0:
        log.error("cannot listen on %s:%d", args.host, args.port)
        return 1

    loop = GLib.MainLoop()

    def _stop(signame: str) -> bool:
        log.info("%s received, stopping", signame)
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, _stop, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, _stop, "SIGINT")
    pool = server.get_session_pool()

    def _expire_sessions() -> bool:
        # Sessions of clients that vanished without TEARDOWN (UDP ones above all) would otherwise
        # never expire, and keep the shared media playing for nobody.
        pool.cleanup()
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(2, _expire_sessions)

    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    GLib.source_remove(source_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
