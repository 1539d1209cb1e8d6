"""Clip recorder benchmark: CPU per camera of capture alone, with a clip recorder on the same connection, and
with a second connection that only demuxes (the design before one connection a camera).

    .venv/bin/python bench/bench_clips.py [--seconds 10] [--cameras 1 4]

For each camera count, N RTSP stand-ins (768x576, 10 fps H.264) are read for ``--seconds``: by the node's
capture alone (PyAV decoding every frame), by the capture with a ``ClipRecorder`` attached (its packets kept
in the recorder's ring), and by the capture beside a second connection per camera that demuxes the same
stream without decoding. Prints this process's CPU (user + system) as a percentage of one core, per camera,
and the time to cut a 40 s clip from kept packets.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import av

from alerts.core.models import Place
from deploy.local.services import start_rtsp
from edge.clips import ClipRecorder, ClipsConfig, write_mp4
from ingest.capture import FFMPEG_OPTIONS, CameraSource, CaptureConfig

FOOTAGE = Path(__file__).resolve().parents[1] / ".cache" / "footage" / "vtest.h264"
PLACE = Place(sub_district="n", community="c", grid="g", site="s")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def demux(url: str, stop: threading.Event) -> None:
    """A second connection to the camera that reads packets and keeps none."""
    with av.open(url, options=FFMPEG_OPTIONS, timeout=(5, 3)) as container:
        for _ in container.demux(container.streams.video[0]):
            if stop.is_set():
                return


def measure(urls: list[str], how: str, seconds: float, folder: Path) -> float:
    """Percent of a core per camera while reading ``urls`` for ``seconds``; ``how``: capture, attached, second."""
    settings = ClipsConfig(spool=folder)
    stop = threading.Event()
    with ExitStack() as stack:
        for i, url in enumerate(urls):
            source = CameraSource(f"cam{i}", CaptureConfig(url=url), place=PLACE, node_id="bench")
            if how == "attached":
                source.attach(ClipRecorder(f"cam{i}", settings, lambda meta, path: None))
            if how == "second":
                thread = threading.Thread(target=demux, args=(url, stop), daemon=True)
                thread.start()
                stack.callback(thread.join)
            stack.enter_context(source)
        stack.callback(stop.set)
        time.sleep(2.0)  # past the opening
        start = cpu_s()
        time.sleep(seconds)
        used = cpu_s() - start
    return 100.0 * used / seconds / len(urls)


def cut_time(url: str, folder: Path, seconds: float = 40.0) -> float:
    """Seconds to write a clip of ``seconds`` of packets as MP4 (read off the stream first)."""
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=(5, 3)) as container:
        stream = container.streams.video[0]
        packets: list[av.Packet] = []
        for packet in container.demux(stream):
            if packet.dts is None or (not packets and not packet.is_keyframe):
                continue
            packets.append(packet)
            if len(packets) >= seconds * 10:
                break
        start = time.perf_counter()
        write_mp4(folder / "cut.mp4", stream, packets)
        return time.perf_counter() - start


HOWS = ("capture", "attached", "second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        cameras = [stack.enter_context(start_rtsp(FOOTAGE, folder / f"rtsp{i}")).url for i in range(max(args.cameras))]
        print(f"a 40 s clip cut (remux, faststart) in {cut_time(cameras[0], folder, 40.0):.3f} s")
        for n in args.cameras:
            urls = cameras[:n]
            plain, attached, second = (measure(urls, how, args.seconds, folder) for how in HOWS)
            print(
                f"{n} camera(s), % of a core per camera: capture {plain:.1f}, with a clip recorder attached "
                f"{attached:.1f}, with a second connection demuxing {second:.1f}"
            )


if __name__ == "__main__":
    main()
