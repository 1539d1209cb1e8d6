"""The edge node's commands: run a node, check a node's config, make the detector's int8 model."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from alerts.core.collector import settle_collector
from alerts.core.settings import wait_for_signal

log = logging.getLogger(__name__)


def _terminate_when_set(failed: threading.Event) -> None:
    failed.wait()
    os.kill(os.getpid(), signal.SIGTERM)


def cmd_edge_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.node import EdgeNode

    node = EdgeNode(load_config(args.config))
    node.start()
    settle_collector()
    # A node that cannot recover wakes the wait below as a service manager's SIGTERM would.
    threading.Thread(target=_terminate_when_set, args=(node.failed,), daemon=True).start()
    wait_for_signal()
    node.stop()
    log.info("edge node stopped: %s", dict(node.counts))
    if node.failure:
        # Non-zero, so that systemd (Restart=on-failure) starts the node again.
        log.error("edge node gave up: %s", node.failure)
        return 1
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok: node {config.node_id}, site {config.site.id}, "
        f"{len(config.sensors)} sensors, {len(config.cameras)} cameras"
    )
    return 0


def cmd_model_int8(args: argparse.Namespace) -> int:
    from pathlib import Path

    from detectors.backend import default_model_dir
    from detectors.int8 import calibration_frames, quantize

    folder = default_model_dir()
    config, weights = (
        Path(args.config or folder / "yolov3-tiny.cfg"),
        Path(args.weights or folder / "yolov3-tiny.weights"),
    )
    out = Path(args.out or weights.with_name(f"{weights.stem}-int8.onnx"))
    try:
        frames = calibration_frames(Path(args.footage), args.frames, args.every, args.first)
        out.write_bytes(quantize(config, weights, frames, args.input_size))
    except (OSError, ValueError) as exc:
        print(f"patrolnet model int8: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: int8 graph of {weights.name}, calibrated on {len(frames)} frames of {args.footage}")
    print(f"use it with detector.backend: {{kind: darknet-ort, model: {out}, config: {config}}}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The edge node's subcommands on the ``patrolnet`` parser."""
    edge = sub.add_parser("edge", help="the edge node").add_subparsers(dest="edge_command", required=True)
    run = edge.add_parser("run", help="run an edge node")
    run.add_argument("--config", required=True, help="node config YAML file")
    run.set_defaults(func=cmd_edge_run)

    config = sub.add_parser("config", help="node configs").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="validate a node config")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    model = sub.add_parser("model", help="detector models").add_subparsers(dest="model_command", required=True)
    int8 = model.add_parser(
        "int8",
        help="make the Darknet model's int8 ONNX graph for kind darknet-ort",
        description="Quantizes yolov3-tiny (or another Darknet .cfg + .weights) to int8 for ONNX Runtime, "
        "calibrated on frames of a video from the site's cameras: about 1.45 times the looks a second.",
    )
    int8.add_argument(
        "--footage", required=True, help="video (file or URL OpenCV opens) to take calibration frames from"
    )
    int8.add_argument("--config", help="Darknet .cfg (default: the offline yolov3-tiny's)")
    int8.add_argument("--weights", help="Darknet .weights (default: the offline yolov3-tiny's)")
    int8.add_argument("--out", help="ONNX file to write (default: <weights>-int8.onnx beside the weights)")
    int8.add_argument("--frames", type=int, default=32, help="calibration frames (default 32)")
    int8.add_argument("--every", type=int, default=12, help="take every N-th frame (default 12)")
    int8.add_argument("--first", type=int, default=0, help="first frame to take (default 0)")
    int8.add_argument("--input-size", type=int, default=416, help="the detector's input size (default 416)")
    int8.set_defaults(func=cmd_model_int8)
