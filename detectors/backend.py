"""Detector backends: the one interface, its configuration, and what every backend shares.

A backend turns a list of BGR frames (any sizes, one list per batch) into one
:class:`~detectors.detections.Detections` per frame, in that frame's pixels.
Three kinds exist behind :func:`detectors.load.load_backend`: ``darknet`` and ``onnx`` run on
OpenCV DNN alone (no torch, for small edge devices), ``ultralytics`` runs
anything ultralytics loads and is an optional extra.

A :class:`DetectionFilterConfig` keeps what a rule cares about; its areas are
fractions of the frame so that one setting survives a camera's change of
resolution.

Example:
    >>> import numpy as np
    >>> d = Detections(
    ...     xyxy=np.array([[0, 0, 10, 20], [0, 0, 60, 60], [5, 5, 9, 9]], dtype=np.float32),
    ...     confidence=np.array([0.9, 0.8, 0.3], dtype=np.float32),
    ...     class_name=np.array(["person", "car", "person"], dtype=object),
    ... )
    >>> DetectionFilterConfig(classes=["person"], min_score=0.5).apply(d, (100, 100, 3)).xyxy.tolist()
    [[0.0, 0.0, 10.0, 20.0]]
    >>> DetectionFilterConfig(max_area=0.25).apply(d, (100, 100, 3)).class_name.tolist()
    ['person', 'person']
    >>> BackendConfig(kind="onnx", model="yolo11n.onnx").input_size
    416
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import Field, model_validator

from alerts.core.config import ConfigModel
from detectors.detections import Detections

log = logging.getLogger(__name__)

MODEL_HINT = (
    "run `make setup`: it fetches yolov3-tiny (yolov3-tiny.cfg, yolov3-tiny.weights, coco.names) into .cache/models; "
    "set PATROLNET_MODEL_DIR to use another folder"
)
"""How to obtain the default model, for error messages."""


def default_model_dir() -> Path:
    """Where models live: ``$PATROLNET_MODEL_DIR``, else ``.cache/models`` at the repository root."""
    env = os.environ.get("PATROLNET_MODEL_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".cache" / "models"


def require_file(path: Path, what: str, hint: str = MODEL_HINT) -> Path:
    """``path`` if it is a file, else a FileNotFoundError that says how to get it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; {hint}")
    return path


def read_names(path: Path) -> list[str]:
    """Class names, one per line, line number = class id (Darknet's ``coco.names`` format)."""
    names = [line.strip() for line in require_file(path, "class names file").read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


@runtime_checkable
class Backend(Protocol):
    """What the detector worker needs from a model, whatever runs it."""

    names: list[str]
    """Class names by class id."""

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        """One Detections per BGR uint8 frame (any sizes), boxes in that frame's pixels, ``class_name`` set."""
        ...


class DetectionFilterConfig(ConfigModel):
    """Which detections a consumer keeps: by class, score and size relative to the frame."""

    classes: list[str] | None = Field(
        default=None, title="Classes", description="Class names to keep, e.g. person, car; unset keeps all."
    )
    min_score: float = Field(default=0.0, ge=0, le=1, title="Minimum score", description="Confidence below this drops.")
    min_area: float = Field(
        default=0.0,
        ge=0,
        le=1,
        title="Minimum area",
        description="Smallest box kept, as a fraction of the frame's area (so it survives a resolution change).",
    )
    max_area: float = Field(
        default=1.0,
        ge=0,
        le=1,
        title="Maximum area",
        description="Largest box kept, as a fraction of the frame's area; drops boxes that swallow the view.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> DetectionFilterConfig:
        if self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} is above max_area {self.max_area}")
        return self

    def apply(self, detections: Detections, frame_shape: tuple[int, ...]) -> Detections:
        """The detections that pass, of a frame whose ``shape`` (height, width, ...) is ``frame_shape``."""
        height, width = frame_shape[:2]
        fraction = detections.area / float(height * width)
        keep = (detections.confidence >= self.min_score) & (fraction >= self.min_area) & (fraction <= self.max_area)
        if self.classes is not None:
            keep &= np.isin(detections.class_name, self.classes)
        return detections[keep]


class BackendConfig(ConfigModel):
    """Which model runs the detector and how: the part of a node's configuration that picks a backend."""

    kind: Literal["darknet", "darknet-ort", "onnx", "ultralytics"] = Field(
        title="Kind",
        description="darknet (OpenCV DNN, .weights + .cfg), darknet-ort (the same files on ONNX Runtime, faster on a "
        "small CPU), onnx (OpenCV DNN, an ultralytics ONNX export, no torch) "
        "or ultralytics (any model ultralytics loads; needs the ultralytics extra).",
    )
    model: Path = Field(
        title="Model",
        description="Weights file: .weights (darknet), .weights or its graph as .onnx, e.g. the int8 one "
        "`patrolnet model int8` makes (darknet-ort), .onnx (onnx), .pt/.onnx/OpenVINO (ultralytics).",
    )
    config: Path | None = Field(
        default=None,
        title="Network config",
        description="Darknet .cfg file; required by darknet and darknet-ort, unused otherwise.",
    )
    names: Path | None = Field(
        default=None,
        title="Class names",
        description="File with one class name per line. Unset: names stored in the model (ultralytics exports), "
        "else coco.names beside the model.",
    )
    input_size: int = Field(
        default=416,
        ge=32,
        multiple_of=32,
        title="Input size",
        description="Side in pixels of the square the network sees; larger finds smaller objects, costs quadratically. "
        "An ONNX export with a fixed size uses its own.",
    )
    score: float = Field(
        default=0.25,
        ge=0,
        le=1,
        title="Score floor",
        description="Confidence below which a backend drops boxes before NMS. OpenCV's Darknet layer already zeroes "
        "scores under 0.2.",
    )
    nms: float = Field(
        default=0.45,
        gt=0,
        le=1,
        title="NMS IoU",
        description="Overlap (IoU) above which a lower-scored box of the same class is suppressed.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        title="Threads",
        description="CPU threads for inference; unset keeps the library's default (all cores the process may use). "
        "OpenCV's thread pool is process-wide.",
    )

    def names_path(self) -> Path:
        """The class names file: ``names``, else ``coco.names`` beside the model."""
        return self.names or self.model.with_name("coco.names")


def nms_detections(
    boxes: np.ndarray, scores: np.ndarray, names: np.ndarray, score: float, nms: float, frame_shape: tuple[int, ...]
) -> Detections:
    """Detections of one frame from raw YOLO rows, the step every YOLO backend ends with.

    ``boxes`` (N, 4) are centre x, centre y, width, height in the frame's pixels,
    ``scores`` (N, classes) per-class confidences, ``names`` the class names as
    an array. Each box keeps its best class; NMS runs per class.
    """
    classes = scores.argmax(axis=1)
    confidence = scores[np.arange(len(scores)), classes]
    keep = confidence >= score
    boxes, confidence, classes = boxes[keep], confidence[keep], classes[keep]
    xywh = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], axis=1)
    # OpenCV's stubs ask for sequences; the binding takes arrays, without a copy into Python lists.
    kept = cv2.dnn.NMSBoxesBatched(xywh, confidence, classes.astype(np.int32), score, nms)  # type: ignore[arg-type]
    chosen = np.asarray(kept, dtype=np.int64).reshape(-1)
    xyxy = np.concatenate([xywh[chosen, :2], xywh[chosen, :2] + xywh[chosen, 2:]], axis=1)
    height, width = frame_shape[:2]
    np.clip(xyxy, 0, [width, height, width, height], out=xyxy)
    # A box wholly off the frame (in a letterbox bar) clips to nothing.
    visible = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    chosen = chosen[visible]
    return Detections(
        xyxy=xyxy[visible].astype(np.float32),
        confidence=confidence[chosen].astype(np.float32),
        class_name=names[classes[chosen]],
    )


def offline_default(**changes: object) -> BackendConfig:
    """The offline yolov3-tiny COCO model in ``default_model_dir()``, as ``make setup`` leaves it."""
    folder = default_model_dir()
    settings = {
        "kind": "darknet",
        "model": folder / "yolov3-tiny.weights",
        "config": folder / "yolov3-tiny.cfg",
        "names": folder / "coco.names",
    }
    return BackendConfig.model_validate(settings | changes)
