"""The Darknet yolov3-tiny graph with int8 weights and activations, for ONNX Runtime on a small CPU.

A look of yolov3-tiny at 416 costs about 65-90 ms of one core in float on
ONNX Runtime (measured on the 2-core AMD EPYC with AVX2 these notes come
from); with int8 convolutions about 45 ms, so the same cores look 1.45 times
as often (issue 16: five looks a second on every busy camera).

Static quantization (ONNX Runtime's ``quantize_static``, QDQ, int8 weights
per output channel, uint8 activations) needs the activations' ranges, which
it measures on calibration frames: take them from the site's own cameras or
footage (a few dozen frames; the ranges, not the weights, are what they set).
The first convolution (the raw image) and the convolutions that feed the YOLO
heads (boxes and scores) stay in float, the usual way to keep a detector's
accuracy: on vtest.avi, calibrated on every 12th of its first 400 frames, the
int8 graph finds 98.1% of the persons (score >= 0.35, IoU >= 0.5) that the
float one finds on every 4th of the 395 frames after them.

The result is an ONNX file that :class:`detectors.darknet_ort.DarknetOrtBackend`
runs when a node's ``detector.backend.model`` names it (``kind: darknet-ort``,
the .cfg still given for the heads). ``patrolnet model int8`` makes it.

Example (needs ``make setup``'s model; calibrated here on one grey frame, which a real
graph must not be):
    >>> import tempfile
    >>> from detectors.backend import offline_default
    >>> from detectors.load import load_backend
    >>> cfg = offline_default(kind="darknet-ort")
    >>> path = Path(tempfile.mkdtemp()) / "yolov3-tiny-int8.onnx"
    >>> path.write_bytes(quantize(cfg.config, cfg.model, [np.full((480, 640, 3), 128, np.uint8)])) < 10_000_000
    True
    >>> backend = load_backend(cfg.model_copy(update={"model": path}))
    >>> len(backend.detect([np.zeros((480, 640, 3), np.uint8)])[0])
    0
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from detectors.darknet_ort import darknet_to_onnx

if TYPE_CHECKING:
    import onnx  # imported where used: only this module and darknet_ort's graph builder need it

log = logging.getLogger(__name__)


def calibration_frames(video: Path, count: int = 32, every: int = 12, first: int = 0) -> list[np.ndarray]:
    """Up to ``count`` BGR frames of ``video``: frame ``first`` and every ``every``-th after it."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"cannot open {video} for calibration frames")
    frames: list[np.ndarray] = []
    try:
        index = 0
        while len(frames) < count and (image := capture.read()[1]) is not None:
            if index >= first and (index - first) % every == 0:
                frames.append(image)
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"{video} has no frame {first}")
    return frames


def _float_kept(model: onnx.ModelProto) -> list[str]:
    """The convolutions that stay in float: the first one and those whose outputs are the YOLO heads'."""
    outputs = {o.name for o in model.graph.output}
    heads = {i for node in model.graph.node if set(node.output) & outputs for i in node.input}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    return [convs[0].name] + [node.name for node in convs if set(node.output) & heads]


def quantize(cfg_path: Path, weights_path: Path, frames: list[np.ndarray], input_size: int = 416) -> bytes:
    """The serialised int8 ONNX graph of a Darknet network, calibrated on ``frames`` (BGR, any size) seen at
    ``input_size`` as the backend sees them."""
    import onnx
    from onnxruntime.quantization import (  # type: ignore[import-untyped]  # no stubs
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # type: ignore[import-untyped]

    if not frames:
        raise ValueError("quantizing needs at least one calibration frame")

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._blobs: Iterator[np.ndarray] = (
                cv2.dnn.blobFromImages([f], 1 / 255, (input_size, input_size), swapRB=True, crop=False) for f in frames
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            blob = next(self._blobs, None)
            return None if blob is None else {"images": blob}

    graph, _ = darknet_to_onnx(cfg_path, weights_path)
    model = onnx.load_from_string(graph)
    with tempfile.TemporaryDirectory(prefix="patrolnet-int8-") as folder:
        plain, prepared, quantized = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, plain)
        # The graph's shapes are symbolic (any batch, any size): ONNX's own shape inference, not the symbolic one.
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_float_kept(model),
        )
        log.info("%s quantized to int8 on %d calibration frames", weights_path.name, len(frames))
        return quantized.read_bytes()
