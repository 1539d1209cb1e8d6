"""Detections: the one interchange type between detector backends, the tracker and the rules.

Boxes are pixel coordinates ``x1, y1, x2, y2`` of the frame they were found in,
in parallel arrays (like supervision's ``Detections``), so filtering is one
boolean mask and no per-box objects are built in the hot loop.

Example:
    >>> import numpy as np
    >>> d = Detections(
    ...     xyxy=np.array([[10, 10, 50, 90], [0, 0, 5, 5]], dtype=np.float32),
    ...     confidence=np.array([0.9, 0.3], dtype=np.float32),
    ...     class_name=np.array(["person", "car"]),
    ... )
    >>> len(d[d.confidence > 0.5])
    1
    >>> d[d.class_name == "car"].xyxy.tolist()
    [[0.0, 0.0, 5.0, 5.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _no_ids(n: int) -> np.ndarray:
    return np.full(n, -1, dtype=np.int64)


@dataclass
class Detections:
    xyxy: np.ndarray
    """(N, 4) float32 boxes in pixels."""
    confidence: np.ndarray
    """(N,) float32 scores in 0..1."""
    class_name: np.ndarray
    """(N,) str class names, e.g. person, car, smoke."""
    tracker_id: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: filled in by __post_init__
    """(N,) int64 track ids; -1 where untracked."""

    def __post_init__(self) -> None:
        if self.tracker_id is None:
            self.tracker_id = _no_ids(len(self.xyxy))
        n = len(self.xyxy)
        if not (len(self.confidence) == len(self.class_name) == len(self.tracker_id) == n):
            raise ValueError("Detections arrays must have the same length")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros(0, dtype=np.float32),
            class_name=np.zeros(0, dtype=object),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice | int) -> Detections:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_name=self.class_name[index],
            tracker_id=self.tracker_id[index],
        )

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def anchors(self) -> np.ndarray:
        """(N, 2) bottom-centre points: where a person stands or a vehicle touches the ground."""
        return np.stack([(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]], axis=1)
