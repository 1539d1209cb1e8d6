"""The detector's int8 graph: made by ``patrolnet model int8`` from the real footage, run by the darknet-ort
backend, finding the people the float graph finds on frames it was not calibrated on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
from vtest import VTEST

from detectors.backend import offline_default
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.regions import matched

REPO = Path(__file__).resolve().parent.parent
CALIBRATED = 384
"""Frames 0 to 383 calibrate (32 frames, every 12th); agreement is judged on the frames after them."""


def persons(found: Detections) -> np.ndarray:
    """The person boxes a camera's default filter keeps (score >= 0.35)."""
    return found.xyxy[(found.class_name == "person") & (found.confidence >= 0.35)]


def int8_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", "model", "int8", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_int8_graph_finds_the_persons_the_float_graph_finds_on_frames_it_never_saw(tmp_path: Path) -> None:
    out = tmp_path / "yolov3-tiny-int8.onnx"
    made = int8_command("--footage", str(VTEST), "--frames", "32", "--every", "12", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert "calibrated on 32 frames" in made.stdout

    graph = onnx.load(out)
    ops = [node.op_type for node in graph.graph.node]
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    # Quantized: the convolutions' weights stored as int8, read through DequantizeLinear; the first convolution
    # and the two heads' stay in float.
    int8_weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == len(convs) - 3
    assert ops.count("QuantizeLinear") >= len(convs) - 3

    base = offline_default(kind="darknet-ort", threads=1)
    plain, int8 = load_backend(base), load_backend(base.model_copy(update={"model": out}))
    found = of = 0
    capture = cv2.VideoCapture(str(VTEST))
    index = 0
    while capture.grab():
        if index >= CALIBRATED and index % 8 == 0:
            frame = cv2.resize(capture.retrieve()[1], (640, 480))
            reference = persons(plain.detect([frame])[0])
            of += len(reference)
            found += matched(reference, persons(int8.detect([frame])[0]))
        index += 1
    capture.release()
    assert of > 150
    assert found / of >= 0.95, f"int8 found {found} of the float graph's {of} persons"


def test_footage_that_cannot_be_read_is_refused_with_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-footage.mp4"
    made = int8_command("--footage", str(missing), "--out", str(tmp_path / "x.onnx"))
    assert made.returncode == 1
    assert str(missing) in made.stderr
    assert not (tmp_path / "x.onnx").exists()
