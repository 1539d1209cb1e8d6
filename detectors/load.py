"""Loading the backend a config names: the one place that knows every backend, above them all.

Example:
    >>> from detectors.backend import BackendConfig
    >>> load_backend(BackendConfig(kind="onnx", model="/nonexistent/yolo11n.onnx"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...
"""

from __future__ import annotations

from detectors.backend import Backend, BackendConfig


def load_backend(cfg: BackendConfig) -> Backend:
    """The backend ``cfg`` names, loaded and warmed up; FileNotFoundError with a hint when files are missing."""
    # Imported here: ultralytics (torch) must stay optional, and each backend loads only when chosen.
    if cfg.kind == "darknet":
        from detectors.darknet import DarknetBackend

        return DarknetBackend(cfg)
    if cfg.kind == "darknet-ort":
        from detectors.darknet_ort import DarknetOrtBackend

        return DarknetOrtBackend(cfg)
    if cfg.kind == "onnx":
        from detectors.onnx import OnnxBackend

        return OnnxBackend(cfg)
    try:
        from detectors.ultralytics_backend import UltralyticsBackend

        return UltralyticsBackend(cfg)
    except ImportError as exc:
        raise ImportError(
            f"the ultralytics backend needs the optional extra: pip install 'patrolnet[ultralytics]' ({exc}); "
            "without torch use kind=onnx or kind=darknet"
        ) from exc
