"""Detector backends on real footage: yolov3-tiny on OpenCV DNN, the ONNX decode, the detection filter.

The Darknet model is the one ``make setup`` puts in ``default_model_dir()``; the footage is vtest.avi from
Debian's opencv-doc (pedestrians, a parked van, a car). The ONNX backend runs on a real ultralytics export of an
untrained YOLO11n (the ``yolo11n`` fixture), and its decoding is also checked on a constructed output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError
from vtest import VTEST

from detectors.backend import Backend, BackendConfig, DetectionFilterConfig, default_model_dir, offline_default
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.onnx import Letterbox, OnnxBackend, decode_output, letterbox, onnx_metadata

SAMPLES = (100, 300, 400, 500, 700)
VEHICLES = {"car", "truck", "bus"}


def darknet_config(**changes: object) -> BackendConfig:
    return offline_default(**({"score": 0.3} | changes))


@pytest.fixture(scope="module")
def frames() -> dict[int, np.ndarray]:
    capture = cv2.VideoCapture(str(VTEST))
    found = {}
    for index in range(max(SAMPLES) + 1):
        ok, frame = capture.read()
        assert ok, f"{VTEST} ended at frame {index}"
        if index in SAMPLES:
            found[index] = frame
    capture.release()
    return found


@pytest.fixture(scope="module")
def darknet() -> Backend:
    return load_backend(darknet_config())


@pytest.fixture(scope="module")
def mid_clip(darknet: Backend, frames: dict[int, np.ndarray]) -> Detections:
    return darknet.detect([frames[400]])[0]


def ordered(d: Detections) -> Detections:
    """The same detections in a fixed order, whatever order NMS kept them in."""
    return d[np.lexsort((d.xyxy[:, 1], d.xyxy[:, 0], d.class_name.astype(str)))]


def assert_inside(d: Detections, shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    assert (d.xyxy >= 0).all() and (d.xyxy[:, [0, 2]] <= width).all() and (d.xyxy[:, [1, 3]] <= height).all()
    assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()


def test_darknet_is_a_backend(darknet: Backend) -> None:
    assert isinstance(darknet, Backend)
    assert len(darknet.names) == 80 and darknet.names[:3] == ["person", "bicycle", "car"]
    assert darknet.detect([]) == []


def test_finds_people_mid_clip(mid_clip: Detections, frames: dict[int, np.ndarray]) -> None:
    people = mid_clip[mid_clip.class_name == "person"]
    assert len(people) >= 3
    assert_inside(mid_clip, frames[400].shape)
    assert mid_clip.xyxy.dtype == np.float32 and mid_clip.confidence.dtype == np.float32
    assert (mid_clip.confidence >= 0.3).all()
    assert (mid_clip.tracker_id == -1).all()


def test_boxes_fit_people(mid_clip: Detections) -> None:
    """The nearest walker at frame 400 (bottom right) stands about 105 px tall, feet at y 410.

    With the mask in the published yolov3-tiny.cfg the box would be half that, around the waist.
    """
    people = mid_clip[mid_clip.class_name == "person"]
    nearest = people[int(np.argmax(people.xyxy[:, 3]))]
    x1, y1, x2, y2 = nearest.xyxy[0]
    assert 85 <= y2 - y1 <= 130 and 30 <= x2 - x1 <= 70
    assert 395 <= y2 <= 425


def test_finds_a_vehicle(darknet: Backend, frames: dict[int, np.ndarray]) -> None:
    found = darknet.detect(list(frames.values()))
    vehicles = [d[np.isin(d.class_name, list(VEHICLES)) & (d.confidence >= 0.5)] for d in found]
    assert sum(len(v) for v in vehicles) >= len(frames), "the parked van and the car are in view all along"


def test_batch_equals_single_frames(darknet: Backend, frames: dict[int, np.ndarray]) -> None:
    batch = [frames[i] for i in (100, 300, 500, 700)]
    together = darknet.detect(batch)
    assert len(together) == 4
    for frame, batched in zip(batch, together, strict=True):
        alone = ordered(darknet.detect([frame])[0])
        batched = ordered(batched)
        assert batched.class_name.tolist() == alone.class_name.tolist()
        np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=0.5)
        np.testing.assert_allclose(batched.confidence, alone.confidence, atol=1e-3)


def test_frames_of_different_sizes_share_a_batch(darknet: Backend, frames: dict[int, np.ndarray]) -> None:
    full = frames[400]
    small = cv2.resize(full, (640, 480), interpolation=cv2.INTER_AREA)
    big_result, small_result = darknet.detect([full, small])
    assert_inside(small_result, small.shape)
    people_big = big_result[big_result.class_name == "person"]
    people_small = small_result[small_result.class_name == "person"]
    assert abs(len(people_big) - len(people_small)) <= 1
    # The same walkers, in the smaller frame's pixels: each small box scaled up lands on a full-size one.
    scaled = people_small.xyxy * (768 / 640)
    for box in scaled:
        overlap = np.minimum(box[2:], people_big.xyxy[:, 2:]) - np.maximum(box[:2], people_big.xyxy[:, :2])
        inter = np.clip(overlap, 0, None).prod(axis=1)
        union = (box[2:] - box[:2]).prod() + people_big.area - inter
        assert (inter / union).max() > 0.6


def test_filter_by_class(mid_clip: Detections, frames: dict[int, np.ndarray]) -> None:
    shape = frames[400].shape
    people = DetectionFilterConfig(classes=["person"]).apply(mid_clip, shape)
    assert len(people) == int((mid_clip.class_name == "person").sum()) >= 3
    assert set(people.class_name.tolist()) == {"person"}
    assert len(DetectionFilterConfig(classes=["toothbrush"]).apply(mid_clip, shape)) == 0
    assert len(DetectionFilterConfig(classes=[]).apply(mid_clip, shape)) == 0
    assert len(DetectionFilterConfig().apply(mid_clip, shape)) == len(mid_clip)


def test_filter_by_score(mid_clip: Detections, frames: dict[int, np.ndarray]) -> None:
    shape = frames[400].shape
    median = float(np.median(mid_clip.confidence))
    kept = DetectionFilterConfig(min_score=median).apply(mid_clip, shape)
    assert 0 < len(kept) < len(mid_clip) and (kept.confidence >= median).all()
    assert len(DetectionFilterConfig(min_score=1.0).apply(mid_clip, shape)) == 0


def test_filter_by_area_survives_a_resolution_change(mid_clip: Detections, frames: dict[int, np.ndarray]) -> None:
    shape = frames[400].shape
    fractions = np.sort(mid_clip.area / (shape[0] * shape[1]))
    cut = float(fractions[len(fractions) // 2])
    large = DetectionFilterConfig(min_area=cut).apply(mid_clip, shape)
    small = DetectionFilterConfig(max_area=cut).apply(mid_clip, shape)
    assert 0 < len(large) < len(mid_clip) and 0 < len(small) < len(mid_clip)
    assert (large.area / (shape[0] * shape[1]) >= cut).all()
    assert len(DetectionFilterConfig(min_area=0.9).apply(mid_clip, shape)) == 0
    # The same scene at twice the resolution: the same boxes pass.
    doubled = Detections(xyxy=mid_clip.xyxy * 2, confidence=mid_clip.confidence, class_name=mid_clip.class_name)
    again = DetectionFilterConfig(min_area=cut).apply(doubled, (shape[0] * 2, shape[1] * 2, 3))
    np.testing.assert_allclose(again.xyxy, large.xyxy * 2)


def test_filter_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        DetectionFilterConfig(min_area=0.5, max_area=0.1)
    with pytest.raises(ValidationError):
        DetectionFilterConfig(min_score=1.5)
    with pytest.raises(ValidationError):
        DetectionFilterConfig.model_validate({"classes": ["person"], "min_scroe": 0.5})
    for name, field in {**DetectionFilterConfig.model_fields, **BackendConfig.model_fields}.items():
        assert field.title and field.description, name


def test_missing_model_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make setup"):
        load_backend(darknet_config(model=tmp_path / "yolov3-tiny.weights"))
    with pytest.raises(FileNotFoundError, match="export"):
        load_backend(BackendConfig(kind="onnx", model=tmp_path / "yolo11n.onnx"))
    with pytest.raises(ValueError, match="needs config"):
        load_backend(BackendConfig(kind="darknet", model=default_model_dir() / "yolov3-tiny.weights"))
    with pytest.raises(ValidationError):
        BackendConfig(kind="tflite", model=tmp_path / "m.tflite")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BackendConfig(kind="onnx", model=tmp_path / "m.onnx", input_size=300)


def test_names_must_match_the_model(tmp_path: Path) -> None:
    names = tmp_path / "three.names"
    names.write_text("person\ncar\ndog\n")
    with pytest.raises(ValueError, match="80 classes, names file has 3"):
        load_backend(darknet_config(names=names))


def test_ultralytics_without_the_extra_names_it(tmp_path: Path) -> None:
    """On a node without torch the ultralytics kind fails with what to install (checked in a fresh interpreter
    where importing torch and ultralytics fails, as it does there, whatever this one has installed)."""
    model = tmp_path / "yolo11n.pt"
    model.write_bytes(b"not read: the import fails first")
    script = f"""
import sys
sys.modules["torch"] = sys.modules["ultralytics"] = None  # what an edge node without the extra has
from detectors.backend import BackendConfig
from detectors.load import load_backend
try:
    load_backend(BackendConfig(kind="ultralytics", model={str(model)!r}))
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'patrolnet[ultralytics]'" in done.stdout, done.stdout + done.stderr


# ONNX: the ultralytics export layout, (batch, 4 + classes, anchors), decoded into frame pixels.

NAMES = np.array(["person", "car", "dog"], dtype=object)


def exported_row(box: tuple[float, float, float, float], scores: list[float], geometry: Letterbox) -> np.ndarray:
    """One anchor's output column for a box given in frame pixels, as the network would write it."""
    x1, y1, x2, y2 = (v * geometry.ratio for v in box)
    centre = [(x1 + x2) / 2 + geometry.left, (y1 + y2) / 2 + geometry.top, x2 - x1, y2 - y1]
    return np.array(centre + scores, dtype=np.float32)


def test_onnx_decode_of_a_constructed_output() -> None:
    frame = np.zeros((576, 768, 3), dtype=np.uint8)
    geometry = letterbox(frame, (320, 320))
    assert geometry.image.shape == (320, 320, 3) and geometry.top == 40 and geometry.left == 0
    columns = [
        exported_row((100, 200, 160, 360), [0.9, 0.0, 0.1], geometry),  # a person
        exported_row((102, 204, 162, 358), [0.7, 0.0, 0.0], geometry),  # the same person again: suppressed
        exported_row((98, 198, 158, 362), [0.0, 0.8, 0.0], geometry),  # a car on the same spot: other class, kept
        exported_row((500, 300, 700, 500), [0.1, 0.2, 0.05], geometry),  # under the floor
        exported_row((600, 50, 740, 120), [0.0, 0.0, 0.6], geometry),  # a dog
    ]
    output = np.stack(columns, axis=1)
    assert output.shape == (4 + len(NAMES), 5)
    found = decode_output(output, geometry, NAMES, 0.25, 0.45, frame.shape)
    assert isinstance(found, Detections)
    assert found.class_name.tolist() == ["person", "car", "dog"]
    np.testing.assert_allclose(found.confidence, [0.9, 0.8, 0.6], atol=1e-6)
    np.testing.assert_allclose(found.xyxy, [[100, 200, 160, 360], [98, 198, 158, 362], [600, 50, 740, 120]], atol=0.01)
    assert found.xyxy.dtype == np.float32 and found.confidence.dtype == np.float32


def test_onnx_metadata_skips_the_graph() -> None:
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    def entry(key: str, value: str) -> bytes:
        return field(14, field(1, key.encode()) + field(2, value.encode()))

    graph = field(7, field(14, b"nested, not metadata") + b"\x08\x96\x01")  # a varint of two bytes inside
    model = b"\x08\x08" + graph + entry("names", "{0: 'person', 1: 'car'}") + entry("imgsz", "[320, 320]")
    assert onnx_metadata(model) == {"names": "{0: 'person', 1: 'car'}", "imgsz": "[320, 320]"}


def test_onnx_refuses_a_file_that_is_no_model(tmp_path: Path) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"\x0f\xff\xff garbage")
    with pytest.raises(ValueError, match="ONNX"):
        load_backend(BackendConfig(kind="onnx", model=model))


def test_onnx_backend_on_a_real_export(frames: dict[int, np.ndarray], yolo11n: dict) -> None:
    # An untrained export scores around 1e-4: the floor sits below that to exercise decoding and NMS.
    backend = load_backend(BackendConfig(kind="onnx", model=yolo11n["onnx"][0], score=1e-6))
    assert isinstance(backend, OnnxBackend) and isinstance(backend, Backend)
    batch = [frames[100], cv2.resize(frames[400], (640, 360))]
    found = backend.detect(batch)
    assert len(found) == 2 and all(isinstance(d, Detections) for d in found)
    for frame, d in zip(batch, found, strict=True):
        assert len(d) > 0
        assert_inside(d, frame.shape)
        assert set(d.class_name.tolist()) <= set(backend.names)
    alone = backend.detect([batch[1]])[0]
    np.testing.assert_allclose(ordered(alone).xyxy, ordered(found[1]).xyxy, atol=0.5)
