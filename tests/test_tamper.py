"""Camera tampering on real footage: vtest.avi with stretches blacked out, blurred, or replaced by another view."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from vtest import DATA, FPS, vtest_frames

from alerts.core.models import Event, EventKind, EventState, Place
from detectors.tamper import TamperConfig, TamperDetector

STRIDE = 5
"""A check every half second needs only every fifth frame decoded."""
CONFIG = TamperConfig(interval_s=0.5, confirm_s=3, clear_s=3, learn_s=5)
PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="cam1")

Tamper = Callable[[np.ndarray], np.ndarray]


def play(*windows: tuple[float, float, Tamper]) -> list[tuple[float, Event]]:
    """(time, event) of the clip, each window's tamper applied to its frames from its start to its end (seconds)."""
    detector = TamperDetector(PLACE, "node-1", CONFIG)
    events = []
    for index, frame in vtest_frames(STRIDE):
        ts = index / FPS
        shown = next((tamper(frame) for start, end, tamper in windows if start <= ts < end), frame)
        events += [(ts, e) for e in detector.process(shown, ts)]
    return events


def black(frame: np.ndarray) -> np.ndarray:
    return np.zeros_like(frame)


def sprayed(frame: np.ndarray) -> np.ndarray:
    return cv2.addWeighted(frame, 0.03, np.full_like(frame, 200), 0.97, 0)


def blurred(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(frame, (25, 25), 0)


def flipped(frame: np.ndarray) -> np.ndarray:
    return cv2.flip(frame, 1)


def panned(frame: np.ndarray) -> np.ndarray:
    return np.roll(frame, frame.shape[1] // 5, axis=1)


def elsewhere(frame: np.ndarray) -> np.ndarray:
    view = cv2.imread(str(DATA / "building.jpg"))
    assert view is not None
    return cv2.resize(view, (frame.shape[1], frame.shape[0]))


def dusk(frame: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(frame, alpha=0.4, beta=10)


def test_the_untouched_clip_raises_nothing() -> None:
    assert play() == []


@pytest.mark.parametrize(
    ("tamper", "kind"),
    [
        (black, "camera_blinded"),
        (sprayed, "camera_blinded"),
        (blurred, "camera_defocused"),
        (flipped, "camera_moved"),
        (panned, "camera_moved"),
        (elsewhere, "camera_moved"),
    ],
)
def test_tampering_raises_once_confirmed_and_recovery_ends_it(tamper: Tamper, kind: str) -> None:
    events = play((20, 40, tamper))
    assert [(e.type, e.state) for _, e in events] == [(kind, EventState.START), (kind, EventState.END)]
    (started, start), (ended, end) = events
    assert 20 + CONFIG.confirm_s <= started <= 20 + CONFIG.confirm_s + 2 * CONFIG.interval_s
    assert 40 + CONFIG.clear_s <= ended <= 40 + CONFIG.clear_s + 2 * CONFIG.interval_s
    assert (start.kind, start.place, start.source) == (EventKind.TROUBLE, PLACE, "node-1")
    assert start.snapshot is not None and end.snapshot is None
    shot = cv2.imdecode(np.frombuffer(start.snapshot, np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None and shot.shape == (576, 768, 3)


@pytest.mark.parametrize("tamper", [black, blurred, flipped])
def test_a_moment_shorter_than_the_confirm_time_is_not_an_alarm(tamper: Tamper) -> None:
    assert play((20, 21.5, tamper)) == []


def test_dusk_is_not_tampering() -> None:
    assert play((20, 60, dusk)) == []


def test_blinded_holds_the_other_conditions_as_they_were() -> None:
    # Out of focus, then covered: while covered, focus cannot be judged, so defocused neither clears nor restarts.
    events = [(e.type, e.state) for _, e in play((20, 40, blurred), (40, 50, black))]
    start, end = EventState.START, EventState.END
    assert events == [
        ("camera_defocused", start),
        ("camera_blinded", start),
        ("camera_blinded", end),
        ("camera_defocused", end),
    ]
