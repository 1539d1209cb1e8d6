"""The same Darknet YOLO weights on ONNX Runtime: the graph is built from the .cfg, no converter, no torch.

OpenCV DNN runs yolov3-tiny well, but ONNX Runtime runs the same arithmetic
faster on a small CPU. There is no ONNX file of these weights to take, so
:func:`darknet_to_onnx` writes the graph from the .cfg (convolutions with
their batch norm folded in, leaky ReLU, max pools, nearest upsampling,
routes) with the weights in it, in memory, at start-up; the YOLO heads'
decoding (sigmoids, grid offsets, anchors) is done in numpy, as OpenCV's
region layer does it, so boxes match :class:`detectors.darknet.DarknetBackend`'s.

Frames are squeezed to the square input as the Darknet backend does, with a
batch axis of any length: crops of several cameras go through in one run.
It needs ``onnx`` (to build the graph) and ``onnxruntime``, both in the ``edge`` extra.
Given an ``.onnx`` model instead of ``.weights``, it runs that graph (the one
:func:`darknet_to_onnx` writes, e.g. made int8 by :mod:`detectors.int8`), with
the .cfg still naming its YOLO heads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from detectors.backend import BackendConfig, nms_detections, read_names, require_file
from detectors.detections import Detections

log = logging.getLogger(__name__)

_EPS = 1e-6
"""Darknet's batch-norm epsilon (``sqrt(variance + .000001f)``)."""


def parse_cfg(path: Path) -> list[dict[str, str]]:
    """The sections of a Darknet .cfg, in order, each with its ``type`` (``net``, ``convolutional``, ...)."""
    sections: list[dict[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append({"type": line.strip("[]").strip()})
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
    return sections


class _Weights:
    """The .weights file read in order, after its header."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        major, minor = np.frombuffer(data[:8], dtype=np.int32)
        header = 20 if major * 10 + minor >= 2 else 16  # "seen" is 64 bits from format 0.2 on
        self._values = np.frombuffer(data[header:], dtype=np.float32)
        self._pos = 0

    def take(self, count: int) -> np.ndarray:
        if self._pos + count > len(self._values):
            raise ValueError("the weights file ends before the network does: weights and .cfg do not match")
        out = self._values[self._pos : self._pos + count]
        self._pos += count
        return out

    def left(self) -> int:
        return len(self._values) - self._pos


def darknet_to_onnx(cfg_path: Path, weights_path: Path) -> tuple[bytes, list[dict[str, str]]]:
    """An ONNX model (serialised) of the network up to its YOLO heads' raw outputs, and those heads' sections.

    Input ``images``: (batch, 3, height, width) RGB in 0..1; outputs ``yolo0``, ``yolo1``...: (batch, anchors *
    (5 + classes), rows, cols), one per [yolo] section, in .cfg order.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sections = parse_cfg(cfg_path)
    weights = _Weights(weights_path)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: list[str] = []
    heads: list[dict[str, str]] = []
    channels = [int(sections[0].get("channels", 3))]
    names = ["images"]
    out_channels: list[int] = []
    out_names: list[str] = []
    for index, section in enumerate(sections[1:]):
        kind, prev, c_in = section["type"], names[-1], channels[-1]
        name = f"l{index}"
        if kind == "convolutional":
            filters, size = int(section["filters"]), int(section["size"])
            pad = size // 2 if section.get("pad", "0") == "1" else int(section.get("padding", "0"))
            stride = int(section.get("stride", "1"))
            if section.get("batch_normalize", "0") == "1":
                beta, gamma, mean, var = (weights.take(filters) for _ in range(4))
                kernel = weights.take(filters * c_in * size * size).reshape(filters, c_in, size, size)
                scale = gamma / np.sqrt(var + _EPS)
                kernel, bias = kernel * scale[:, None, None, None], beta - mean * scale
            else:
                bias = weights.take(filters)
                kernel = weights.take(filters * c_in * size * size).reshape(filters, c_in, size, size)
            inits += [numpy_helper.from_array(kernel.astype(np.float32), f"{name}.w")]
            inits += [numpy_helper.from_array(bias.astype(np.float32), f"{name}.b")]
            conv = name if section.get("activation") == "linear" else f"{name}.conv"
            nodes.append(
                helper.make_node(
                    "Conv", [prev, f"{name}.w", f"{name}.b"], [conv], name=conv, kernel_shape=[size, size],
                    strides=[stride, stride], pads=[pad] * 4,
                )
            )  # fmt: skip
            if section.get("activation") == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv], [name], alpha=0.1))
            elif section.get("activation") != "linear":
                raise ValueError(f"activation {section.get('activation')} is not supported")
            c_out = filters
        elif kind == "maxpool":
            size, stride = int(section["size"]), int(section["stride"])
            # Darknet pads size-1 pixels at the right and bottom: a stride-1 pool keeps the size.
            extra = size - stride
            nodes.append(
                helper.make_node(
                    "MaxPool", [prev], [name], kernel_shape=[size, size], strides=[stride, stride],
                    pads=[0, 0, extra, extra],
                )
            )  # fmt: skip
            c_out = c_in
        elif kind == "upsample":
            factor = float(section.get("stride", "2"))
            inits.append(numpy_helper.from_array(np.array([1, 1, factor, factor], np.float32), f"{name}.s"))
            nodes.append(helper.make_node("Resize", [prev, "", f"{name}.s"], [name], mode="nearest"))
            c_out = c_in
        elif kind == "route":
            layers = [int(v) for v in section["layers"].split(",")]
            picked = [index + v if v < 0 else v for v in layers]
            nodes.append(helper.make_node("Concat", [out_names[i] for i in picked], [name], axis=1))
            c_out = sum(out_channels[i] for i in picked)
        elif kind == "yolo":
            outputs.append(prev)
            heads.append(section)
            name, c_out = prev, c_in
        else:
            raise ValueError(f"Darknet layer [{kind}] is not supported by the ONNX Runtime backend")
        names.append(name)
        channels.append(c_out)
        out_names.append(name)
        out_channels.append(c_out)
    if weights.left():
        raise ValueError(f"{weights.left()} weights are left over: weights and .cfg do not match")
    renamed = [helper.make_node("Identity", [out], [f"yolo{i}"]) for i, out in enumerate(outputs)]
    graph = helper.make_graph(
        nodes + renamed,
        "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(f"yolo{i}", TensorProto.FLOAT, None) for i in range(len(outputs))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString(), heads


def _anchors(head: dict[str, str]) -> np.ndarray:
    pairs = np.array([float(v) for v in head["anchors"].split(",")], dtype=np.float32).reshape(-1, 2)
    return pairs[[int(m) for m in head["mask"].split(",")]]


def decode_heads(outputs: list[np.ndarray], heads: list[dict[str, str]], size: int) -> np.ndarray:
    """(batch, rows, 4 + classes) from raw YOLO outputs: cx, cy, w, h as fractions of the input, then
    class scores times objectness (OpenCV's region-layer rows without the objectness column)."""
    rows = []
    for out, head in zip(outputs, heads, strict=True):
        anchors = _anchors(head)
        batch, _, grid_h, grid_w = out.shape
        out = out.reshape(batch, len(anchors), -1, grid_h, grid_w).transpose(0, 1, 3, 4, 2)
        sig = 1 / (1 + np.exp(-out))
        cols, lines = np.meshgrid(np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32))
        cx = (sig[..., 0] + cols) / grid_w
        cy = (sig[..., 1] + lines) / grid_h
        w = np.exp(out[..., 2]) * anchors[None, :, None, None, 0] / size
        h = np.exp(out[..., 3]) * anchors[None, :, None, None, 1] / size
        scores = sig[..., 5:] * sig[..., 4:5]
        rows.append(
            np.concatenate([np.stack([cx, cy, w, h], axis=-1), scores], axis=-1).reshape(
                batch, -1, 4 + scores.shape[-1]
            )
        )
    return np.concatenate(rows, axis=1)


def yolo_heads(cfg_path: Path) -> list[dict[str, str]]:
    """The [yolo] sections of a Darknet .cfg, in order: what decodes the graph's outputs ``yolo0``, ``yolo1``..."""
    return [section for section in parse_cfg(cfg_path) if section["type"] == "yolo"]


class DarknetOrtBackend:
    """A Darknet .cfg + .weights YOLO (v3 tiny and the like) on ONNX Runtime."""

    def __init__(self, cfg: BackendConfig) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]  # no stubs

        if cfg.config is None:
            raise ValueError("kind=darknet-ort needs config: the network's .cfg file, e.g. yolov3-tiny.cfg")
        weights = require_file(cfg.model, "darknet weights or their ONNX graph")
        network = require_file(cfg.config, "darknet config")
        self.names = read_names(cfg.names_path())
        self._names = np.array(self.names, dtype=object)
        self._cfg = cfg
        if weights.suffix == ".onnx":
            model, self._heads = weights.read_bytes(), yolo_heads(network)
        else:
            model, self._heads = darknet_to_onnx(network, weights)
        options = ort.SessionOptions()
        if cfg.threads:
            options.intra_op_num_threads = cfg.threads
        options.inter_op_num_threads = 1
        # Idle pool threads that spin wait on a core the cameras' decoders need: with 16 cameras on 2 cores the
        # node used 0.17 cores less for the same looks a second without it (bench/bench_video.py, section 5).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.detect([np.zeros((cfg.input_size, cfg.input_size, 3), dtype=np.uint8)])
        log.info("darknet %s on ONNX Runtime: %d classes, input %d", weights.name, len(self.names), cfg.input_size)

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        size = self._cfg.input_size
        blob = cv2.dnn.blobFromImages(frames, scalefactor=1 / 255, size=(size, size), swapRB=True, crop=False)
        rows = decode_heads(self._session.run(None, {"images": blob}), self._heads, size)
        if rows.shape[-1] - 4 != len(self.names):
            raise ValueError(f"model has {rows.shape[-1] - 4} classes, names file has {len(self.names)}")
        results = []
        for frame, frame_rows in zip(frames, rows, strict=True):
            height, width = frame.shape[:2]
            boxes = frame_rows[:, :4] * np.array([width, height, width, height], dtype=np.float32)
            results.append(
                nms_detections(boxes, frame_rows[:, 4:], self._names, self._cfg.score, self._cfg.nms, frame.shape)
            )
        return results
