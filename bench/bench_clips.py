"""Clip recorder benchmark: CPU per camera of capture alone, and with the clip recorder's second connection.

    .venv/bin/python bench/bench_clips.py [--seconds 10] [--cameras 1 4]

For each camera count, N RTSP stand-ins (768x576, 10 fps H.264) are read for ``--seconds``: first by the
node's capture alone (OpenCV decoding every frame), then by the capture and a ``ClipRecorder`` each (PyAV
demuxing packets into its ring, no decoding), and last by the recorders alone. Prints this process's CPU
(user + system) as a percentage of one core, per camera, and the time to cut a 40 s clip from kept packets.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import av

from alerts.core.models import Place
from deploy.local.services import start_rtsp
from edge.clips import ClipRecorder, ClipsConfig, write_mp4
from ingest.capture import CameraSource, CaptureConfig

FOOTAGE = Path(__file__).resolve().parents[1] / ".cache" / "footage" / "vtest.h264"
PLACE = Place(sub_district="n", community="c", grid="g", site="s")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(urls: list[str], capture: bool, clips: bool, seconds: float, folder: Path) -> float:
    """Percent of a core per camera while reading ``urls`` for ``seconds``."""
    settings = ClipsConfig(spool=folder)
    with ExitStack() as stack:
        for i, url in enumerate(urls):
            if capture:
                source = CameraSource(f"cam{i}", CaptureConfig(url=url), place=PLACE, node_id="bench")
                stack.enter_context(source)
            if clips:
                recorder = ClipRecorder(f"cam{i}", CaptureConfig(url=url), settings, lambda meta, path: None)
                recorder.start()
                stack.callback(recorder.stop)
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
            plain = measure(urls, capture=True, clips=False, seconds=args.seconds, folder=folder)
            both = measure(urls, capture=True, clips=True, seconds=args.seconds, folder=folder)
            alone = measure(urls, capture=False, clips=True, seconds=args.seconds, folder=folder)
            print(
                f"{n} camera(s), % of a core per camera: capture {plain:.1f}, capture + clips {both:.1f}, "
                f"clip recorder alone {alone:.2f}"
            )


if __name__ == "__main__":
    main()
