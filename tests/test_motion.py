"""The motion gate on real footage (vtest.avi: people walking past a parked van) and on a still view."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from vtest import VTEST

from detectors.motion import MotionConfig, MotionGate

FPS = 10
WARM_UP = 10
WHOLE_FRAME = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]


@pytest.fixture(scope="module")
def walking() -> list[np.ndarray]:
    """The first 30 s of vtest.avi, at 640x480 as a common camera sends it."""
    capture = cv2.VideoCapture(str(VTEST))
    frames: list[np.ndarray] = []
    while len(frames) < 300:
        ok, frame = capture.read()
        assert ok, f"{VTEST} ended at frame {len(frames)}"
        frames.append(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_AREA))
    capture.release()
    return frames


def still_scene(frame: np.ndarray, count: int, noise: float = 4.0) -> list[np.ndarray]:
    """One view repeated, with the sensor noise a real camera adds to every frame."""
    cv2.setRNGSeed(7)
    frames = []
    for _ in range(count):
        grain = np.empty(frame.shape, dtype=np.int16)
        cv2.randn(grain, 0, noise)  # type: ignore[call-overload]  # the stubs want arrays; numbers work
        frames.append(cv2.add(frame, grain, dtype=cv2.CV_8U))
    return frames


def run(gate: MotionGate, frames: list[np.ndarray]) -> tuple[list[int], list[bool]]:
    """Indices of the frames the gate sent to the detector, and whether each frame had motion."""
    runs, motion = [], []
    for index, frame in enumerate(frames):
        if gate.check(frame, index / FPS):
            runs.append(index)
        motion.append(gate.motion)
    return runs, motion


def test_people_walking_is_motion(walking: list[np.ndarray]) -> None:
    gate = MotionGate()
    runs, motion = run(gate, walking)
    assert np.mean(motion[WARM_UP:]) > 0.9
    assert len(runs) > 0.9 * len(walking)
    boxes = gate.motion_boxes
    assert len(boxes) > 0 and boxes.dtype == np.float32
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 640).all() and (boxes[:, [1, 3]] <= 480).all()
    assert 0 < gate.fraction < 0.5


def test_still_scene_runs_only_on_refresh(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig(refresh_s=10))
    runs, motion = run(gate, still_scene(walking[150], 300))
    assert not any(motion)
    assert runs == [0, 100, 200]  # the first frame, then every 10 s at 10 fps


def test_no_refresh_runs_once(walking: list[np.ndarray]) -> None:
    runs, _ = run(MotionGate(MotionConfig(refresh_s=None)), still_scene(walking[150], 50))
    assert runs == [0]


def test_ignoring_the_whole_view_sees_no_motion(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig(ignore=[WHOLE_FRAME], refresh_s=10))
    runs, motion = run(gate, walking)
    assert not any(motion) and gate.fraction == 0.0 and len(gate.motion_boxes) == 0
    assert runs == [0, 100, 200]


def test_ignored_half_hides_its_motion(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig(ignore=[[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]]))
    seen = []
    for index, frame in enumerate(walking):
        gate.check(frame, index / FPS)
        seen.append(gate.motion_boxes)
    boxes = np.concatenate(seen)
    assert len(boxes) > 0
    assert boxes[:, 0].min() >= 320 - 4  # one analysis pixel of slack at the polygon's edge


def test_something_that_stays_is_absorbed_then_refreshed(walking: list[np.ndarray]) -> None:
    """A van that parks is motion when it arrives; the background takes it in, and refresh keeps it tracked."""
    view = walking[150]
    parked = view.copy()
    cv2.rectangle(parked, (100, 300), (260, 400), (235, 235, 235), thickness=-1)  # a white van
    gate = MotionGate(MotionConfig(background_s=1.0, refresh_s=5))
    frames = still_scene(view, 20) + still_scene(parked, 130)  # 2 s empty, then 13 s with the van
    runs, motion = [], []
    for index, frame in enumerate(frames):
        if gate.check(frame, index / FPS):
            runs.append(index)
        motion.append(gate.motion)
        if index == 20:
            box, *others = gate.motion_boxes
            assert not others
            np.testing.assert_allclose(box, [100, 300, 261, 401], atol=6)
    assert motion[20]
    assert not any(motion[60:])  # 4 s after it stopped, it is background
    quiet = [i for i in runs if i > max(np.flatnonzero(motion))]
    assert len(quiet) >= 2 and all(b - a == 50 for a, b in itertools.pairwise(quiet))


def test_new_resolution_starts_over(walking: list[np.ndarray]) -> None:
    gate = MotionGate(MotionConfig(refresh_s=60))
    still = still_scene(walking[150], 3)
    assert [gate.check(f, i / FPS) for i, f in enumerate(still)] == [True, False, False]
    small = cv2.resize(walking[150], (320, 240))
    assert gate.check(small, 0.3)  # a new view: the detector runs
    assert not gate.check(small, 0.4) and not gate.motion


def test_grey_frames(walking: list[np.ndarray]) -> None:
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in walking[:40]]
    _, motion = run(MotionGate(), grey)
    assert np.mean(motion[WARM_UP:]) > 0.9


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        MotionConfig(ignore=[[(0, 0), (1, 1)]])
    with pytest.raises(ValidationError):
        MotionConfig(ignore=[[(0, 0), (1.5, 0), (1, 1)]])
    with pytest.raises(ValidationError):
        MotionConfig.model_validate({"refresh": 5})
    for name, field in MotionConfig.model_fields.items():
        assert field.title and field.description, name
