"""Camera tampering: a camera blinded, defocused or turned away raises a trouble Event; recovery ends it.

Each check works on a small grey copy of the frame (160 pixels wide, about a
millisecond) and runs at most every ``interval_s`` of frame time, so it costs
next to nothing per frame. Three tests, in order, the first that applies wins:

- blinded: the picture is very dark, or nearly uniform (lens covered,
  sprayed, or a light shone into it);
- defocused: sharpness, the variance of the Laplacian divided by the variance
  of the picture (so that dusk or a contrast change does not count), falls
  below a fraction of the camera's own learned baseline;
- moved: the scene's stable edges (edges present in at least half of the
  learned frames, so passers-by do not count) no longer show up in the
  picture. The score is the share of stable edge pixels matched by an edge
  within a pixel, corrected for the share one would match by chance, so a
  busy or noisy picture does not match everything. Canny's thresholds follow
  the picture's contrast, so night and day compare.

A blinded picture cannot say whether the camera is in focus or where it
points, so those conditions hold still rather than clear. A condition must hold
``confirm_s`` to start, so one dark frame is not an alarm, and be gone
``clear_s`` to end (a :class:`alerts.core.debounce.Debounce` each). The baseline and the reference edges are
learned over the first ``learn_s`` and then follow slow changes (seasons, a tree growing) with
a time constant of ``refresh_s``, but only while the camera is healthy.

Example:
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="cam1")
    >>> tamper = TamperDetector(place, "node-1", TamperConfig(learn_s=0, confirm_s=2, clear_s=2))
    >>> rng = np.random.default_rng(1)
    >>> scene = cv2.resize(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (320, 240))
    >>> black = np.zeros_like(scene)
    >>> feed = [scene] * 3 + [black] * 4 + [scene] * 4
    >>> [(e.type, e.state.value) for t, f in enumerate(feed) for e in tamper.process(f, float(t))]
    [('camera_blinded', 'start'), ('camera_blinded', 'end')]
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.debounce import Debounce
from alerts.core.models import Event, EventKind, EventState, Place, Severity
from detectors.snapshot import render

log = logging.getLogger(__name__)

WIDTH = 160
"""Width of the grey copy every test runs on."""

TITLES = {
    "camera_blinded": "Camera blinded or covered",
    "camera_defocused": "Camera out of focus",
    "camera_moved": "Camera moved or turned away",
}


class TamperConfig(ConfigModel):
    """Thresholds and timings of the tamper checks; the defaults suit a daylight courtyard."""

    interval_s: float = Field(default=1.0, ge=0, title="Interval", description="Seconds of frame time between checks.")
    confirm_s: float = Field(
        default=10.0, ge=0, title="Confirm time", description="Seconds a condition must hold before it raises."
    )
    clear_s: float = Field(default=10.0, ge=0, title="Clear time", description="Seconds of recovery before it ends.")
    learn_s: float = Field(
        default=10.0,
        ge=0,
        title="Learning time",
        description="Seconds of frames the baseline and reference start from.",
    )
    refresh_s: float = Field(
        default=600.0,
        gt=0,
        title="Refresh time",
        description="Time constant, in seconds, of the slow reference update.",
    )
    dark_level: float = Field(
        default=20.0, ge=0, le=255, title="Dark level", description="Mean grey (0..255) below which it is blinded."
    )
    uniform_contrast: float = Field(
        default=6.0, ge=0, title="Uniform contrast", description="Grey standard deviation below which it is blinded."
    )
    sharpness_ratio: float = Field(
        default=0.4,
        gt=0,
        lt=1,
        title="Sharpness ratio",
        description="Share of the baseline sharpness below which it is defocused.",
    )
    scene_match: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        title="Scene match",
        description="Score (0..1) of the reference edges found, below which it has moved.",
    )


class TamperDetector:
    """One camera's tamper checks: frames in, trouble Events out."""

    def __init__(self, place: Place, source: str, config: TamperConfig | None = None) -> None:
        self.place, self.source = place, source
        self.config = config or TamperConfig()
        self._conditions = {kind: Debounce(self.config.confirm_s, self.config.clear_s) for kind in TITLES}
        self._last_check: float | None = None
        self.reset()

    def reset(self) -> None:
        """Learn the view afresh, e.g. once an installer has re-aimed the camera on purpose."""
        self._learned_from: float | None = None
        self._edges: np.ndarray | None = None
        self._sharpness: float | None = None
        self._samples = 0
        self.measures: dict[str, Any] = {}

    def process(self, frame: np.ndarray, ts: float) -> list[Event]:
        """Events raised by ``frame`` (BGR) taken at ``ts`` (seconds since the epoch)."""
        if self._last_check is not None and ts - self._last_check < self.config.interval_s:
            return []
        self._last_check = ts
        state = self._check(frame, ts)
        events = [self._step(kind, value, frame, ts) for kind, value in state.items()]
        return [e for e in events if e is not None]

    def _check(self, frame: np.ndarray, ts: float) -> dict[str, bool | None]:
        cfg = self.config
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        grey = cv2.resize(grey, (WIDTH, max(1, WIDTH * grey.shape[0] // grey.shape[1])), interpolation=cv2.INTER_AREA)
        mean, contrast = (float(v[0][0]) for v in cv2.meanStdDev(grey))
        self.measures = {"mean": round(mean, 1), "contrast": round(contrast, 1)}
        if mean < cfg.dark_level or contrast < cfg.uniform_contrast:
            return {"camera_blinded": True, "camera_defocused": None, "camera_moved": None}
        sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var()) / max(contrast, 1.0) ** 2
        edges = cv2.Canny(grey, contrast, 3 * contrast)
        self.measures["sharpness"] = round(sharpness, 3)
        if self._learned_from is None:
            self._learned_from = ts
        if self._sharpness is None or ts - self._learned_from < cfg.learn_s:
            self._learn(sharpness, edges, 1.0 / (self._samples + 1))
            return {"camera_blinded": False, "camera_defocused": None, "camera_moved": None}
        assert self._edges is not None
        defocused = sharpness < cfg.sharpness_ratio * self._sharpness
        score = None if defocused else self._scene_score(edges)
        moved = None if score is None else score < cfg.scene_match
        self.measures |= {"sharpness_baseline": round(self._sharpness, 3), "scene_match": score}
        if not (defocused or moved or any(c.on for c in self._conditions.values())):
            self._learn(sharpness, edges, min(1.0, cfg.interval_s / cfg.refresh_s))
        return {"camera_blinded": False, "camera_defocused": defocused, "camera_moved": moved}

    def _learn(self, sharpness: float, edges: np.ndarray, weight: float) -> None:
        seen = (edges > 0).astype(np.float32)
        if self._edges is None or self._edges.shape != seen.shape:
            self._edges, self._sharpness, weight = seen, sharpness, 1.0
        self._edges += weight * (seen - self._edges)
        self._sharpness += weight * (sharpness - self._sharpness)  # type: ignore[operator]
        self._samples += 1

    def _scene_score(self, edges: np.ndarray) -> float | None:
        assert self._edges is not None
        stable = self._edges > 0.5
        if stable.shape != edges.shape or stable.mean() < 0.005:
            return None  # a bare wall or a new resolution: nothing to compare yet
        near = cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0
        chance = float(near.mean())
        found = float(near[stable].mean())
        return round((found - chance) / (1.0 - chance), 3) if chance < 1 else 0.0

    def _step(self, kind: str, value: bool | None, frame: np.ndarray, ts: float) -> Event | None:
        if value is None:
            return None  # a check that cannot tell holds the condition as it is
        switched = self._conditions[kind].update(value, ts)
        if switched is None:
            return None
        return self._event(kind, EventState.START if switched else EventState.END, frame, ts)

    def _event(self, kind: str, state: EventState, frame: np.ndarray, ts: float) -> Event:
        log.info("%s %s on %s: %s", kind, state.value, self.place.device, self.measures)
        return Event(
            ts=datetime.fromtimestamp(ts, UTC),
            kind=EventKind.TROUBLE,
            type=kind,
            state=state,
            severity=Severity.MAJOR,
            place=self.place,
            source=self.source,
            title=TITLES[kind] + (", cleared" if state is EventState.END else ""),
            attributes=dict(self.measures),
            snapshot=render(frame, []) if state is EventState.START else None,
        )
