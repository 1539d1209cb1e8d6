"""Tracking: stable track ids across frames, one :class:`Tracker` per camera.

The association itself is Roboflow's ByteTrack from the ``trackers`` package,
the maintained successor of the ByteTrack that supervision no longer ships.
``trackers`` declares ``opencv-python``, which would put a second cv2 beside
``opencv-python-headless``; it runs on the headless one, so it is installed
with ``pip install --no-deps trackers`` and its other needs (supervision,
scipy, rich, pydeprecate, requests) are listed as our own.

ByteTrack matches boxes by IoU alone, whatever their class,
so a person walking past a parked van could take the van's id; one ByteTrack
runs per class group instead (people, two-wheelers, four-wheelers, any other
class on its own) and the groups share one id space. A group keeps classes
the detector confuses with each other (car and truck) so a van that flickers
between them stays one track.

Timestamps drive ByteTrack's Kalman step, so a motion gate that skips frames
or a camera that drops a second of them does not break tracks; a lost track
survives ``lost_track_s`` of frame time.

Example:
    >>> import numpy as np
    >>> tracker = Tracker()
    >>> def person_at(x):
    ...     box = np.array([[x, 100, x + 40, 200]], dtype=np.float32)
    ...     return Detections(xyxy=box, confidence=np.array([0.9], dtype=np.float32),
    ...                       class_name=np.array(["person"], dtype=object))
    >>> [int(tracker.update(person_at(100 + 5 * i), ts=i / 10).tracker_id[0]) for i in range(4)]
    [-1, 1, 1, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import supervision as sv
from pydantic import Field
from trackers import ByteTrackTracker

from alerts.core.config import ConfigModel
from detectors.detections import Detections

log = logging.getLogger(__name__)

DEFAULT_GROUPS: list[list[str]] = [["person"], ["bicycle", "motorcycle"], ["car", "truck", "bus"]]
"""Classes tracked together: the detector confuses the classes within a group, not across groups."""


class TrackerConfig(ConfigModel):
    """How one camera's tracker associates boxes; the defaults suit yolov3-tiny at 5-10 fps."""

    lost_track_s: float = Field(
        default=2.0,
        gt=0,
        title="Lost track time",
        description="Seconds a track outlives its last detection, to bridge occlusions and missed detections.",
    )
    new_track_score: float = Field(
        default=0.5,
        ge=0,
        le=1,
        title="New track score",
        description="Score a detection needs to start a track.",
    )
    high_score: float = Field(
        default=0.5,
        ge=0,
        le=1,
        title="High score",
        description="ByteTrack's split: detections at or above it match first; lower ones only extend tracks.",
    )
    min_iou: float = Field(
        default=0.1, ge=0, le=1, title="Minimum IoU", description="Overlap a detection needs to join a track."
    )
    min_hits: int = Field(
        default=2,
        ge=1,
        title="Minimum hits",
        description="Consecutive detections before a track gets an id; fewer stay untracked (-1).",
    )
    frame_rate: float = Field(
        default=10.0, gt=0, title="Frame rate", description="The camera's nominal frames per second."
    )
    class_groups: list[list[str]] = Field(
        default_factory=lambda: [list(g) for g in DEFAULT_GROUPS],
        title="Class groups",
        description="Classes tracked together; any class not listed is tracked on its own.",
    )


class Tracker:
    """One camera's tracks: Detections in, the same Detections with ``tracker_id`` out."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._group_of = {name: i for i, group in enumerate(self.config.class_groups) for name in group}
        self._groups: dict[str | int, ByteTrackTracker] = {}
        # ByteTrack numbers each group's tracks from 1; map (group, local id) to one camera-wide id.
        self._ids: dict[tuple[str | int, int], int] = {}
        self._next_id = 1

    def update(self, detections: Detections, ts: float) -> Detections:
        """``detections`` of the frame taken at ``ts`` (seconds, increasing) with track ids; order is kept.

        A detection that has not yet earned a track (``min_hits``) keeps id -1.
        """
        ids = np.full(len(detections), -1, dtype=np.int64)
        keys = np.array([self._group_of.get(name, name) for name in detections.class_name], dtype=object)
        for key in self._keys(keys):
            mask = np.flatnonzero(keys == key)
            local = self._track_group(key, detections[mask], ts)
            ids[mask] = [self._global_id(key, int(i)) if i >= 0 else -1 for i in local]
        return Detections(
            xyxy=detections.xyxy, confidence=detections.confidence, class_name=detections.class_name, tracker_id=ids
        )

    def _keys(self, keys: np.ndarray) -> Iterable[str | int]:
        # Groups without detections still update, so their lost tracks age and expire.
        return dict.fromkeys([*self._groups, *keys.tolist()])

    def _track_group(self, key: str | int, detections: Detections, ts: float) -> np.ndarray:
        tracker = self._groups.get(key)
        if tracker is None:
            tracker = self._groups[key] = ByteTrackTracker(
                lost_track_buffer=max(1, round(self.config.lost_track_s * 30)),  # counted in 30 fps frames
                frame_rate=self.config.frame_rate,
                track_activation_threshold=self.config.new_track_score,
                minimum_consecutive_frames=self.config.min_hits,
                minimum_iou_threshold=self.config.min_iou,
                high_conf_det_threshold=self.config.high_score,
            )
        n = len(detections)
        tracked = tracker.update(
            sv.Detections(
                xyxy=detections.xyxy.astype(np.float32),
                confidence=detections.confidence.astype(np.float32),
                data={"row": np.arange(n)},
            ),
            timestamp=ts,
        )
        local = np.full(n, -1, dtype=np.int64)
        if len(tracked) and tracked.tracker_id is not None:
            local[tracked.data["row"]] = tracked.tracker_id
        alive = {t.tracker_id for t in tracker.tracks}
        self._ids = {k: v for k, v in self._ids.items() if k[0] != key or k[1] in alive}
        return local

    def _global_id(self, key: str | int, local: int) -> int:
        found = self._ids.get((key, local))
        if found is None:
            found = self._ids[(key, local)] = self._next_id
            self._next_id += 1
        return found
