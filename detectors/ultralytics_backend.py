"""Detector backend for any model ultralytics loads from a local path: .pt, .onnx, an OpenVINO folder, or a .yaml.

ultralytics is an optional extra (``pip install 'patrolnet[ultralytics]'``, which brings torch); it is imported
only when a backend is built, so an edge node without torch can import this package.

This backend never downloads. ultralytics treats a missing file named like a release asset (``yolo11n.pt``) as
a request to fetch it, so a missing path is refused before ultralytics sees it. Before the first import it is
also told, unless the environment already says otherwise, that it is offline and must not pip-install what it
finds missing: it reads ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` once, at import. A .yaml builds an untrained
model, which is only good for exercising the plumbing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from detectors.backend import BackendConfig, read_names
from detectors.detections import Detections

if TYPE_CHECKING:
    from ultralytics import YOLO
    from ultralytics.engine.results import Results

log = logging.getLogger(__name__)

# Tasks whose results carry axis-aligned boxes; classify has none and obb has rotated ones.
_BOX_TASKS = frozenset({"detect", "segment", "pose"})


def import_yolo() -> type[YOLO]:
    """ultralytics' ``YOLO`` class, imported offline and without auto-install as the module docstring says."""
    # YOLO_OFFLINE also skips the DNS probe ultralytics makes at import, which stalls on a node without DNS,
    # and its usage telemetry on every predict.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    omp_unset = "OMP_NUM_THREADS" not in os.environ
    # ultralytics sets OMP_NUM_THREADS=1 when unset (to tame training); torch imported first keeps its
    # default thread count, and the variable is dropped again so it does not reach other libraries or children.
    import torch  # noqa: F401
    from ultralytics import YOLO

    if omp_unset:
        os.environ.pop("OMP_NUM_THREADS", None)
    return YOLO


class UltralyticsBackend:
    """Runs one ultralytics model on batches of BGR frames.

    ``cfg.input_size`` is the inference size for models that accept any size (.pt, .yaml, dynamic exports);
    a fixed-size export runs at the size it was exported with. Class names are the model's own unless
    ``cfg.names`` names a file. ``cfg.threads`` caps torch's process-wide thread pool; an ONNX Runtime session
    that ultralytics opens for an .onnx keeps its own default. ``device`` is a torch device string such as
    ``"cpu"`` or ``"cuda:0"``.
    """

    def __init__(self, cfg: BackendConfig, device: str = "cpu") -> None:
        model_path = Path(cfg.model)
        if not model_path.exists():
            raise FileNotFoundError(f"ultralytics model not found: {model_path}; this backend never downloads")
        yolo = import_yolo()
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        self._model = yolo(str(model_path))
        if self._model.task not in _BOX_TASKS:
            raise ValueError(f"{model_path} is a {self._model.task!r} model; a detector needs boxes")
        self._cfg = cfg
        self._device = device
        # One run on a blank frame: an exported model is loaded only here, with these settings (asking it for
        # its names first would load it twice), and the first real batch does not pay for the lazy setup.
        self._predict([np.zeros((cfg.input_size, cfg.input_size, 3), dtype=np.uint8)])
        predictor: Any = self._model.predictor  # ultralytics declares it None; the first predict made it
        by_id: dict[int, str] = predictor.model.names
        if cfg.names is None:
            self.names: list[str] = [by_id[i] for i in range(len(by_id))]
        else:
            self.names = read_names(cfg.names)
            if len(self.names) != len(by_id):
                raise ValueError(
                    f"{cfg.names} has {len(self.names)} class names, {model_path} has {len(by_id)} classes"
                )
        self._names = np.array(self.names, dtype=object)
        log.info("ultralytics %s model %s on %s, %d classes", self._model.task, model_path, device, len(self.names))

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        out = []
        for result in self._predict(frames):
            assert result.boxes is not None, "a box task's results have boxes"
            boxes = result.boxes.cpu()
            out.append(
                Detections(
                    xyxy=boxes.xyxy.numpy().astype(np.float32, copy=False),
                    confidence=boxes.conf.numpy().astype(np.float32, copy=False),
                    class_name=self._names[boxes.cls.numpy().astype(np.int64)],
                )
            )
        return out

    def _predict(self, frames: list[np.ndarray]) -> list[Results]:
        # Without stream=True, predict returns a list of Results; its annotation allows a generator and tensors too.
        return cast(
            "list[Results]",
            self._model.predict(
                frames,
                imgsz=self._cfg.input_size,
                conf=self._cfg.score,
                iou=self._cfg.nms,
                device=self._device,
                verbose=False,
            ),
        )
