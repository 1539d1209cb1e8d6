"""Detection on regions around motion: building, merging, mapping back, NMS, and agreement on the real footage."""

from __future__ import annotations

import functools
import itertools

import cv2
import numpy as np
import pytest
from vtest import vtest_frames

from detectors.backend import offline_default
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.motion import MotionGate
from detectors.regions import Plan, RegionConfig, RegionDetector, build_regions, matched, merge_regions, window_around

FRAME = (480, 640, 3)


WINDOW = (394, 295)
"""The default window on a 640x480 frame: 256 of 416 of its width and height."""


def test_a_box_gets_the_window_centred_on_it() -> None:
    assert window_around(np.array([300, 200, 340, 280]), WINDOW, FRAME) == (123, 92, 517, 387)


def test_a_window_at_the_border_is_shifted_inside_the_frame() -> None:
    assert window_around(np.array([600, 440, 640, 480]), WINDOW, FRAME) == (246, 185, 640, 480)
    assert window_around(np.array([0, 0, 10, 10]), WINDOW, FRAME) == (0, 0, 394, 295)


def test_a_snapped_window_still_covers_its_content_where_a_cell_allows() -> None:
    cell = (640 / 13, 480 / 13)
    assert window_around(np.array([300, 200, 340, 280]), WINDOW, FRAME, cell) == (98, 111, 492, 406)
    for box in ([100, 10, 460, 60], [20, 300, 380, 470], [250, 150, 600, 420]):
        x1, y1, x2, y2 = window_around(np.array(box), WINDOW, FRAME, cell)
        assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]
        assert abs(x1 / cell[0] - round(x1 / cell[0])) < 0.02 and abs(y1 / cell[1] - round(y1 / cell[1])) < 0.02


def test_a_window_larger_than_the_frame_is_cut_to_it() -> None:
    assert window_around(np.array([0, 0, 10, 10]), (800, 500), FRAME) == (0, 0, 640, 480)


def test_boxes_whose_windows_overlap_share_one_and_distant_ones_stay_apart() -> None:
    boxes = np.array([[10, 10, 50, 90], [100, 40, 140, 120], [560, 380, 600, 470]])
    assert build_regions(boxes, FRAME, WINDOW, margin=0.0) == [(0, 0, 394, 295), (246, 185, 640, 480)]


def test_boxes_that_do_not_fit_one_window_together_keep_their_own() -> None:
    boxes = np.array([[0, 100, 200, 200], [240, 100, 420, 200]])
    assert len(build_regions(boxes, FRAME, WINDOW, margin=0.0) or []) == 2
    assert len(build_regions(boxes, FRAME, (480, 295), margin=0.0) or []) == 1


def test_the_margin_counts_and_a_box_too_large_for_a_window_sends_the_frame_whole() -> None:
    assert build_regions(np.array([[0, 0, 380, 100]]), FRAME, WINDOW, margin=0.0) == [(0, 0, 394, 295)]
    assert build_regions(np.array([[0, 0, 380, 100]]), FRAME, WINDOW, margin=0.2) is None
    assert build_regions(np.array([[0, 0, 100, 300]]), FRAME, WINDOW, margin=0.0) is None


def _dets(boxes: list[list[float]], scores: list[float], names: list[str]) -> Detections:
    return Detections(
        xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.array(scores, dtype=np.float32),
        class_name=np.array(names, dtype=object),
    )


def test_boxes_map_back_to_frame_pixels_and_duplicates_across_regions_are_suppressed() -> None:
    # One person seen by two overlapping regions, a car by one of them.
    first = ((100, 50, 356, 306), _dets([[200, 100, 240, 200], [10, 10, 60, 40]], [0.9, 0.6], ["person", "car"]))
    second = ((250, 50, 506, 306), _dets([[52, 102, 90, 199]], [0.8], ["person"]))
    merged = merge_regions([first, second], nms=0.45)
    assert sorted(merged.class_name.tolist()) == ["car", "person"]
    person = merged[merged.class_name == "person"]
    assert person.xyxy.tolist() == [[300, 150, 340, 250]] and person.confidence.tolist() == pytest.approx([0.9])
    assert merged[merged.class_name == "car"].xyxy.tolist() == [[110, 60, 160, 90]]


def test_nms_keeps_different_classes_on_the_same_spot() -> None:
    found = ((0, 0, 256, 256), _dets([[10, 10, 50, 90], [10, 10, 50, 90]], [0.9, 0.8], ["person", "bicycle"]))
    assert sorted(merge_regions([found], 0.45).class_name.tolist()) == ["bicycle", "person"]


class Counting:
    """A backend that finds one person in the middle of whatever it is shown, and counts what it saw."""

    def __init__(self) -> None:
        self.names = ["person"]
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        self.shapes += [f.shape for f in frames]
        return [
            _dets(
                [[f.shape[1] / 2 - 5, f.shape[0] / 2 - 10, f.shape[1] / 2 + 5, f.shape[0] / 2 + 10]], [0.9], ["person"]
            )
            for f in frames
        ]


def test_plans_go_whole_without_motion_on_the_period_and_when_regions_cost_as_much() -> None:
    full, region = Counting(), Counting()
    detector = RegionDetector(full, region, RegionConfig(input_size=256, full_every_s=2.0), 416, 0.45)
    motion = np.array([[300, 200, 340, 280]], dtype=np.float32)
    assert detector.plan("cam", FRAME, motion, 0.0).regions is None  # a camera's first look is whole
    assert detector.plan("cam", FRAME, None, 0.5).regions is None  # no motion: the gate's refresh
    # Centred would be (123, 92); the corner snaps to the full look's 32-pixel cells: 640 / 13 and 480 / 13.
    assert detector.plan("cam", FRAME, motion, 1.0).regions == [(98, 111, 492, 406)]
    assert detector.plan("cam", FRAME, motion, 2.6).regions is None  # two seconds since the last whole look
    three = np.array([[0, 0, 20, 20], [600, 0, 640, 20], [300, 440, 340, 480]], dtype=np.float32)
    assert detector.plan("cam", FRAME, three, 3.0).regions is None  # 3 x 256^2 is not cheaper than 416^2
    assert len(detector.plan("cam", FRAME, three[:2], 3.1).regions or []) == 2


def test_a_batch_sends_every_crop_of_every_camera_in_one_call_and_maps_boxes_back() -> None:
    full, region = Counting(), Counting()
    detector = RegionDetector(full, region, RegionConfig(), 416, 0.45)
    frames = [np.zeros(FRAME, np.uint8), np.zeros(FRAME, np.uint8)]
    results = detector.run(frames, [Plan([(0, 0, 394, 295), (246, 185, 640, 480)]), Plan(None)])
    assert region.shapes == [(295, 394, 3), (295, 394, 3)] and full.shapes == [FRAME]
    assert sorted(results[0].xyxy.tolist()) == [[192, 137.5, 202, 157.5], [438, 322.5, 448, 342.5]]
    assert results[1].xyxy.tolist() == [[315, 230, 325, 250]]
    assert detector.looks == {"full": 1, "regions": 1, "crops": 2}


def _persons(d: Detections) -> np.ndarray:
    return d.xyxy[(d.class_name == "person") & (d.confidence >= 0.35)]


@functools.cache
def _footage_640(count: int = 240) -> list[np.ndarray]:
    return [cv2.resize(frame, (640, 480)) for _, frame in itertools.islice(vtest_frames(stride=1), count)]


def test_darknet_on_onnx_runtime_finds_what_opencv_finds() -> None:
    pytest.importorskip("onnxruntime")
    frames = _footage_640()[:40:8]
    opencv = load_backend(offline_default()).detect(frames)
    ort = load_backend(offline_default(kind="darknet-ort")).detect(frames)
    for a, b in zip(opencv, ort, strict=True):
        assert a.class_name.tolist() == b.class_name.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)


def test_regions_find_the_people_full_frame_detection_finds_on_the_footage() -> None:
    frames = _footage_640()
    gate = MotionGate()
    full = load_backend(offline_default())
    detector = RegionDetector(full, load_backend(offline_default(input_size=256)), RegionConfig(), 416, 0.45)
    reference = found = region_frames = 0
    for index, frame in enumerate(frames):
        gate.check(frame, index / 10)
        if index % 4:
            continue
        detector._last_full["cam"] = index / 10  # judge regions wherever the frame allows them, not the period
        plan = detector.plan("cam", frame.shape, gate.motion_boxes if gate.motion else None, index / 10 + 0.1)
        if plan.regions is None:
            continue
        region_frames += 1
        expected = _persons(full.detect([frame])[0])
        reference += len(expected)
        found += matched(expected, _persons(detector.run([frame], [plan])[0]))
    assert region_frames >= 10, f"only {region_frames} frames could be looked at in regions"
    assert found / reference >= 0.95, f"regions found {found} of {reference} people full-frame detection finds"
