"""The video part of a node config: the detector the node shares, and each camera with its scene.

In the node's YAML::

    detector:
      backend: {kind: darknet, model: .cache/models/yolov3-tiny.weights, config: .cache/models/yolov3-tiny.cfg}
    cameras:
      - id: gate-east
        name: East gate, inside
        capture: {url: "rtsp://user:secret@10.0.0.5:554/stream1"}
        filter: {classes: [person, car, truck, bicycle, motorcycle], min_score: 0.35}
        scene:
          zones: [{name: walkway, polygon: [[0, 0.33], [1, 0.40], [1, 0.85], [0, 0.45]]}]
          rules: [{type: intrusion, zone: walkway}]

Example:
    >>> camera = CameraConfig(id="gate", capture={"url": "rtsp://10.0.0.5/stream1"})
    >>> camera.filter.min_score, camera.motion.refresh_s
    (0.35, 10.0)
"""

from __future__ import annotations

import logging

from pydantic import Field

from alerts.core.config import ConfigModel
from detectors.backend import BackendConfig, DetectionFilterConfig, offline_default
from detectors.motion import MotionConfig
from detectors.regions import RegionConfig
from detectors.rules import SceneConfig
from detectors.tamper import TamperConfig
from detectors.tracking import TrackerConfig
from detectors.visual_fire import VisualFireConfig
from ingest.capture import CaptureConfig

log = logging.getLogger(__name__)

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DetectorConfig(ConfigModel):
    """The one detector worker of a node, shared by all its cameras."""

    backend: BackendConfig = Field(
        default_factory=offline_default,
        title="Backend",
        description="Which model runs and on what: darknet (offline yolov3-tiny, the default), onnx, ultralytics.",
    )
    max_batch: int = Field(
        default=4, ge=1, le=64, title="Batch size", description="Frames of different cameras per forward pass."
    )
    queue_depth: int = Field(
        default=2,
        ge=1,
        le=32,
        title="Queue depth",
        description="Frames a camera may have waiting; the oldest is dropped (and counted) beyond it.",
    )
    regions: RegionConfig = Field(
        default_factory=RegionConfig,
        title="Regions",
        description="Whether the detector looks at regions around motion (cheaper) or at whole frames.",
    )


class CameraConfig(ConfigModel):
    """One courtyard camera: where to read it, what to look for, and what to raise."""

    id: str = Field(pattern=_ID, title="Camera id", description="Id of the camera at its site.")
    name: str = Field(default="", title="Name", description="Where it looks, as a person says it.")
    capture: CaptureConfig = Field(title="Capture", description="Stream URL, timeouts, reconnects.")
    analyse_fps: float | None = Field(
        default=None,
        gt=0,
        title="Analysed frames per second",
        description="At most this many frames a second go to tamper checks, the motion gate and the detector; "
        "none: every frame.",
    )
    motion: MotionConfig = Field(
        default_factory=MotionConfig, title="Motion gate", description="When the detector runs at all."
    )
    filter: DetectionFilterConfig = Field(
        default_factory=lambda: DetectionFilterConfig(
            classes=["person", "bicycle", "car", "motorcycle", "bus", "truck"], min_score=0.35
        ),
        title="Detection filter",
        description="Classes, minimum score and box size kept from the detector for this camera.",
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, title="Tracker", description="How detections become tracks."
    )
    tamper: TamperConfig | None = Field(
        default_factory=TamperConfig,
        title="Tamper detection",
        description="Covered, blinded, defocused or turned-away camera; null turns it off.",
    )
    scene: SceneConfig = Field(
        default_factory=SceneConfig, title="Scene", description="Zones, lines, armed schedules and rules."
    )
    fire: VisualFireConfig | None = Field(
        default=None,
        title="Visual fire",
        description="Classes of a fire/smoke model that raise fire events; null when the model has none.",
    )
