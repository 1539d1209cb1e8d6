"""Tracking on real footage with the real offline detector: people become a few long tracks, not many detections."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from vtest import FPS, detect_clip

from detectors.detections import Detections
from detectors.tracking import Tracker, TrackerConfig


@pytest.fixture(scope="module")
def tracked() -> list[tuple[int, Detections]]:
    tracker = Tracker()
    return [(i, tracker.update(d, ts=i / FPS)) for i, d in detect_clip()]


def test_people_are_few_long_tracks_not_many_detections(tracked: list[tuple[int, Detections]]) -> None:
    lengths: Counter[int] = Counter()
    classes: dict[int, set[str]] = defaultdict(set)
    for _, d in tracked:
        lengths.update(d.tracker_id[d.tracker_id >= 0].tolist())
        for track, name in zip(d.tracker_id.tolist(), d.class_name.tolist(), strict=True):
            classes[track].add(name)
    people = [t for t, n in lengths.items() if n >= 20 and classes[t] == {"person"}]
    detections = sum(int((d.class_name == "person").sum()) for _, d in tracked)
    person_tracks = [t for t in lengths if classes[t] == {"person"}]
    assert len(people) >= 3, lengths
    assert detections > 10 * len(person_tracks), (detections, len(person_tracks))
    # The parked van and car are in view all along: each stays one track for most of the clip.
    vehicles = sorted((n for t, n in lengths.items() if classes[t] <= {"car", "truck", "bus"}), reverse=True)
    assert len(vehicles) >= 2 and vehicles[1] > 0.8 * len(tracked), vehicles


def test_a_track_id_is_never_shared_within_a_frame(tracked: list[tuple[int, Detections]]) -> None:
    for _, d in tracked:
        ids = d.tracker_id[d.tracker_id >= 0]
        assert len(ids) == len(set(ids.tolist()))


def _walker(x: float, cls: str = "person") -> Detections:
    return Detections(
        xyxy=np.array([[x, 100, x + 40, 200]], dtype=np.float32),
        confidence=np.array([0.9], dtype=np.float32),
        class_name=np.array([cls], dtype=object),
    )


def test_a_track_survives_a_short_gap_and_expires_after_a_long_one() -> None:
    tracker = Tracker(TrackerConfig(lost_track_s=2.0))
    first = [int(tracker.update(_walker(100 + 4 * t), ts=t / 10).tracker_id[0]) for t in range(10)]
    # A 1.5 s gap (the motion gate idling, or the detector missing): the same person keeps the same id.
    after_gap = int(tracker.update(_walker(100 + 4 * 25), ts=2.5).tracker_id[0])
    # A 10 s gap: the track has expired and the next sighting starts a new one.
    after_long = [int(tracker.update(_walker(400 + 4 * t), ts=12.5 + t / 10).tracker_id[0]) for t in range(3)]
    assert first[1:] == [first[1]] * 9 and first[1] > 0
    assert after_gap == first[1]
    assert after_long[-1] not in (-1, first[1])


def test_a_person_passing_a_parked_car_does_not_take_its_id() -> None:
    tracker = Tracker()
    car = np.array([[100, 100, 300, 200]], dtype=np.float32)
    ids: dict[str, set[int]] = defaultdict(set)
    for t in range(30):
        person = np.array([[20 + 12 * t, 90, 60 + 12 * t, 210]], dtype=np.float32)
        d = Detections(
            xyxy=np.concatenate([car, person]),
            confidence=np.array([0.9, 0.9], dtype=np.float32),
            class_name=np.array(["car", "person"], dtype=object),
        )
        out = tracker.update(d, ts=t / 10)
        for name, track in zip(out.class_name.tolist(), out.tracker_id.tolist(), strict=True):
            ids[name].add(track)
    assert ids["car"] - {-1} and ids["person"] - {-1}
    assert not (ids["car"] - {-1}) & (ids["person"] - {-1})
    assert len(ids["car"] - {-1}) == 1
