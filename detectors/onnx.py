r"""YOLO exported to ONNX by ultralytics (v8, 11), run on OpenCV DNN: the torch-free backend for small devices.

The export's output is ``(batch, 4 + classes, anchors)``: centre x, centre y,
width, height in input pixels, then one sigmoid score per class (no
objectness). Frames are letterboxed as ultralytics does (aspect kept, grey
114 bars, centred), because these models are trained and validated that way.

OpenCV DNN runs such an export (checked on OpenCV 4.14 with yolo11n: outputs
equal torch's within 5e-5), so the backend needs nothing beyond OpenCV. It
cannot import an export with dynamic shapes (``dynamic=True``), and a static
export runs only at the batch size and input size it was exported with (its
attention block's reshapes are fixed). So this backend reads both, and the
class names, from the metadata ultralytics stores in the file, and feeds the
model as many frames per forward as it was exported for (``batch=4`` for
four cameras; a short last group is padded with blank frames). onnxruntime
runs the same file 1.6 to 2 times as fast on a 2-core CPU (yolo11n at 320),
at the cost of one more dependency.

Example:
    >>> entry = b"\x0a\x05batch\x12\x014"  # StringStringEntryProto(key="batch", value="4")
    >>> onnx_metadata(b"\x08\x08" + b"\x72" + bytes([len(entry)]) + entry)
    {'batch': '4'}
    >>> box = letterbox(np.zeros((576, 768, 3), dtype=np.uint8), (320, 320))
    >>> box.image.shape, round(box.ratio, 4), box.left, box.top
    ((320, 320, 3), 0.4167, 0, 40)
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from detectors.backend import BackendConfig, nms_detections, read_names, require_file
from detectors.detections import Detections

log = logging.getLogger(__name__)

ONNX_HINT = (
    "export one with ultralytics (static shapes, OpenCV cannot run dynamic ones): "
    "YOLO('yolo11n.pt').export(format='onnx', imgsz=320) or batch=4 to serve four cameras per forward"
)

_PAD = (114, 114, 114)
"""ultralytics' letterbox grey."""


class Letterbox(NamedTuple):
    """A frame scaled into the network's input, and how to map boxes back."""

    image: np.ndarray
    ratio: float
    left: int
    top: int


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> Letterbox:
    """``frame`` scaled to fit ``size`` (height, width) with its aspect kept, centred on grey, as ultralytics does."""
    height, width = frame.shape[:2]
    out_h, out_w = size
    ratio = min(out_h / height, out_w / width)
    new_w, new_h = round(width * ratio), round(height * ratio)
    if (new_w, new_h) != (width, height):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = round((out_w - new_w) / 2 - 0.1), round((out_h - new_h) / 2 - 0.1)
    image = cv2.copyMakeBorder(
        frame, top, out_h - new_h - top, left, out_w - new_w - left, cv2.BORDER_CONSTANT, value=_PAD
    )
    return Letterbox(image, ratio, left, top)


def decode_output(
    output: np.ndarray, geometry: Letterbox, names: np.ndarray, score: float, nms: float, frame_shape: tuple[int, ...]
) -> Detections:
    """Detections of one frame from its ``(4 + classes, anchors)`` output, in the frame's pixels."""
    rows = output.T
    boxes = (rows[:, :4] - np.array([geometry.left, geometry.top, 0, 0], dtype=np.float32)) / geometry.ratio
    return nms_detections(boxes, rows[:, 4:], names, score, nms, frame_shape)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one protobuf message; length-delimited values stay unparsed views."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            value, pos = 0, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"not a protobuf message (wire type {wire} at byte {pos})")
        yield field, value


def onnx_metadata(data: bytes) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file, without the onnx package (the graph is skipped, not parsed)."""
    metadata = {}
    for field, value in _fields(memoryview(data)):
        if field == 14 and isinstance(value, memoryview):  # ModelProto.metadata_props
            entry = {f: bytes(v).decode() for f, v in _fields(value) if isinstance(v, memoryview)}
            metadata[entry.get(1, "")] = entry.get(2, "")
    return metadata


class OnnxBackend:
    """An ultralytics YOLO detection model exported to ONNX with static shapes, on OpenCV DNN."""

    def __init__(self, cfg: BackendConfig) -> None:
        path = require_file(cfg.model, "ONNX model", ONNX_HINT)
        data = path.read_bytes()
        try:
            metadata = onnx_metadata(data)
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path} is not an ONNX model file ({exc}); {ONNX_HINT}") from exc
        if cfg.names is None and "names" in metadata:
            by_id: dict[int, str] = ast.literal_eval(metadata["names"])
            self.names = [by_id[i] for i in range(len(by_id))]
        else:
            self.names = read_names(cfg.names_path())
        self._names = np.array(self.names, dtype=object)
        imgsz = ast.literal_eval(metadata["imgsz"]) if "imgsz" in metadata else cfg.input_size
        self._size: tuple[int, int] = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
        self._batch = int(metadata.get("batch", "1"))
        self._cfg = cfg
        if cfg.threads:
            cv2.setNumThreads(cfg.threads)
        try:
            self._net = cv2.dnn.readNetFromONNX(np.frombuffer(data, dtype=np.uint8))
            # The first forward allocates every layer; pay it now, and learn whether the layout fits.
            self.detect([np.zeros((*self._size, 3), dtype=np.uint8)])
        except cv2.error as exc:
            detail = exc.err.strip().lstrip("> ").splitlines()[0]
            raise ValueError(f"OpenCV DNN cannot run {path}: {detail}; {ONNX_HINT}") from exc
        log.info("onnx %s: %d classes, input %s (h, w), batch %d", path.name, len(self.names), self._size, self._batch)

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        results = []
        for start in range(0, len(frames), self._batch):
            group = frames[start : start + self._batch]
            boxes = [letterbox(frame, self._size) for frame in group]
            images = [box.image for box in boxes]
            images += [np.zeros_like(images[0])] * (self._batch - len(images))
            self._net.setInput(cv2.dnn.blobFromImages(images, scalefactor=1 / 255, swapRB=True))
            output = self._net.forward()
            if output.ndim != 3 or output.shape[1] != 4 + len(self.names):
                raise ValueError(
                    f"output {output.shape} is not (batch, 4 + {len(self.names)} classes, anchors): "
                    "an ultralytics detection export without nms/end2end is needed"
                )
            for frame, geometry, rows in zip(group, boxes, output, strict=False):
                results.append(decode_output(rows, geometry, self._names, self._cfg.score, self._cfg.nms, frame.shape))
        return results
