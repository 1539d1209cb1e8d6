"""The ultralytics backend, with real ultralytics on real footage, offline.

The model is YOLO11n built from its .yaml, untrained: it proves the plumbing (loading .pt, .onnx and .yaml
from disk, one batched predict, mapping results into ``Detections`` in each frame's pixels), not accuracy.
An untrained head scores its boxes around 1e-4, so the confidence floor is set far below that to get any.
The module runs with sockets refused, and checks that nothing tried a download, a probe or telemetry.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import YOLO_INPUT_SIZE
from vtest import VTEST

from detectors.backend import Backend, BackendConfig
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.ultralytics_backend import UltralyticsBackend

SCORE = 1e-6


@pytest.fixture(scope="module", autouse=True)
def network_attempts() -> Iterator[list[object]]:
    """Connections and DNS look-ups tried while this module runs, all refused.

    ultralytics swallows OSError from its own online probes, so tests check this list rather than a raise.
    """
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network refused by test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        yield attempts
    assert attempts == [], "something in this module tried the network"


@pytest.fixture(scope="module")
def models(yolo11n: dict[str, tuple[Path, list[str]]]) -> dict[str, tuple[Path, list[str]]]:
    """Model file by format, with the class names it should report."""
    return yolo11n


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VTEST))
    grabbed = []
    try:
        for index in (0, 200, 400):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            assert ok, f"cannot read frame {index} of {VTEST}"
            grabbed.append(frame)
    finally:
        capture.release()
    # A camera with another resolution in the same batch: boxes must come back in that frame's own pixels.
    grabbed.append(cv2.resize(grabbed[0], (640, 360)))
    return grabbed


def config(model: Path, names: Path | None = None) -> BackendConfig:
    return BackendConfig(
        kind="ultralytics", model=model, names=names, input_size=YOLO_INPUT_SIZE, score=SCORE, nms=0.45
    )


@pytest.mark.parametrize("fmt", ["pt", "onnx", "yaml"])
def test_batch_maps_to_detections_in_frame_pixels(
    fmt: str, models: dict[str, tuple[Path, list[str]]], frames: list[np.ndarray], network_attempts: list[object]
) -> None:
    path, names = models[fmt]
    backend = load_backend(config(path))
    assert isinstance(backend, UltralyticsBackend) and isinstance(backend, Backend)
    assert backend.names == names

    results = backend.detect(frames)

    assert len(results) == len(frames)
    for detections, frame in zip(results, frames, strict=True):
        assert isinstance(detections, Detections)
        n = len(detections)
        assert detections.xyxy.shape == (n, 4) and detections.xyxy.dtype == np.float32
        assert detections.confidence.shape == (n,) and detections.confidence.dtype == np.float32
        assert detections.class_name.shape == (n,)
        assert set(detections.class_name) <= set(backend.names)
        assert (detections.confidence >= SCORE).all()
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = detections.xyxy.T
        assert ((x1 >= 0) & (x1 <= x2) & (x2 <= width)).all()
        assert ((y1 >= 0) & (y1 <= y2) & (y2 <= height)).all()
    assert sum(len(d) for d in results) > 0, "no boxes at all: the checks above proved nothing"
    assert backend.detect([]) == []
    assert network_attempts == []


def test_names_file_overrides_the_model_names_and_must_match_its_classes(
    tmp_path: Path, models: dict[str, tuple[Path, list[str]]], frames: list[np.ndarray]
) -> None:
    path, _ = models["pt"]
    names = [f"class{i}" for i in range(80)]
    (tmp_path / "ours.names").write_text("\n".join(names) + "\n")
    backend = UltralyticsBackend(config(path, tmp_path / "ours.names"))
    assert backend.names == names
    assert set(backend.detect(frames[:1])[0].class_name) <= set(names)

    (tmp_path / "short.names").write_text("person\ncar\n")
    with pytest.raises(ValueError, match="2 class names"):
        UltralyticsBackend(config(path, tmp_path / "short.names"))


def test_missing_model_is_refused_before_ultralytics_could_download_it(
    tmp_path: Path, network_attempts: list[object]
) -> None:
    # A release-asset name: ultralytics itself would try to fetch it.
    with pytest.raises(FileNotFoundError, match=r"yolo11n\.pt"):
        UltralyticsBackend(config(tmp_path / "yolo11n.pt"))
    assert network_attempts == []
