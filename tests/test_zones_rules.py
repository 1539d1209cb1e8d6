"""Zones, schedules and rules: on real footage (vtest.avi, the offline detector, ByteTrack) and on constructed
sequences, all with simulated time, so a clip of 80 s stands for any hour of any day and minutes pass in a loop."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from vtest import FPS, detect_clip, vtest_frames

from alerts.core.models import Event, EventKind, EventState, Place
from detectors.backend import offline_default
from detectors.detections import Detections
from detectors.load import load_backend
from detectors.rules import RuleEngine, SceneConfig
from detectors.tracking import Tracker
from detectors.zones import LineConfig, LineCounter, PolygonZone, Schedule, ScheduleConfig

SHANGHAI = ZoneInfo("Asia/Shanghai")
PLACE = Place(sub_district="sd", community="c", grid="g", site="s", device="cam1")
START, UPDATE, END = EventState.START, EventState.UPDATE, EventState.END

SCENE = """
zones:
  - name: walkway            # the paved path people walk along
    polygon: [[0, 0.33], [0.45, 0.36], [1, 0.40], [1, 0.85], [0.45, 0.55], [0, 0.45]]
  - name: kerb               # where the van and the car stand
    polygon: [[0.82, 0.04], [1, 0.04], [1, 0.2], [0.82, 0.2]]
  - name: view
    polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]
lines:
  - name: middle             # across the walkway; walking down the arrow, 'left' is the picture's right
    start: [0.5, 0.3]
    end: [0.5, 0.8]
    in_side: left
schedules:
  night:
    timezone: Asia/Shanghai
    armed: ["Mon-Fri 22:00-06:00", "Sat,Sun 00:00-24:00"]
rules:
  - {type: intrusion, zone: walkway, schedule: night}
  - {type: line_crossing, line: middle, name: middle-both}
  - {type: line_crossing, line: middle, direction: in, name: middle-in}
  - {type: loitering, zone: walkway, dwell_s: 15}
  - {type: crowd, zone: view, min_count: 5, hold_s: 2}
  - {type: illegal_parking, zone: kerb, stationary_s: 30}
  - {type: zone_occupied, zone: kerb, occupied_s: 20, classes: null}
"""


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """A moment of November 2026 in Shanghai; the 23rd is a Monday."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


def scene(**changes: object) -> SceneConfig:
    return SceneConfig.model_validate(yaml.safe_load(SCENE) | changes)


Clip = list[tuple[int, Detections]]


@pytest.fixture(scope="module")
def clip() -> Clip:
    return detect_clip()


def run(config: SceneConfig, clip: Clip, start: float) -> list[Event]:
    """The events of the clip played from ``start``, then of an empty view a minute later, which ends the rest."""
    tracker, engine = Tracker(), RuleEngine(config, PLACE, "node-1")
    detections = dict(clip)
    events: list[Event] = []
    frame, ts = np.zeros((576, 768, 3), np.uint8), start
    for index, frame in vtest_frames():
        ts = start + index / FPS
        events += engine.process(frame, tracker.update(detections[index], ts), ts)
    return events + engine.process(frame, Detections.empty(), ts + 60)


@pytest.fixture(scope="module")
def night(clip: Clip) -> list[Event]:
    return run(scene(), clip, local(23, 23))


def of(events: list[Event], rule: str, state: EventState | None = None) -> list[Event]:
    return [e for e in events if e.attributes["rule"] == rule and (state is None or e.state is state)]


def decode(event: Event) -> np.ndarray:
    assert event.snapshot is not None and event.snapshot[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(event.snapshot, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (576, 768, 3)
    return image


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def visits(clip: Clip, zone: PolygonZone, leave_s: float) -> Counter[int]:
    """How many times each person track entered the zone, counting a return after ``leave_s`` away as a new visit."""
    tracker, count, last_seen = Tracker(), Counter[int](), dict[int, float]()
    for index, d in clip:
        ts = index / FPS
        tracked = tracker.update(d, ts)
        inside = zone.trigger(tracked, (576, 768)) & (tracked.tracker_id >= 0) & (tracked.class_name == "person")
        here = set(tracked.tracker_id[inside].tolist())
        last_seen = {t: seen for t, seen in last_seen.items() if t in here or ts - seen < leave_s}
        count.update(here - last_seen.keys())
        last_seen |= dict.fromkeys(here, ts)
    return count


def test_intrusion_while_armed_is_one_event_per_visit(night: list[Event], clip: Clip) -> None:
    events = of(night, "intrusion:walkway")
    walkway = PolygonZone(yaml.safe_load(SCENE)["zones"][0]["polygon"])
    expected = visits(clip, walkway, leave_s=2.0)
    starts = [e for e in events if e.state is START]
    assert Counter(e.attributes["track_id"] for e in starts) == expected
    assert len(expected) >= 3 and sum(expected.values()) < 1.2 * len(expected), "mostly one intrusion per track"
    person_frames = sum(int((d.class_name == "person").sum()) for _, d in clip)
    assert person_frames > 20 * len(starts), "not one event per frame"
    for track in expected:
        states = [e.state for e in events if e.attributes["track_id"] == track and e.state is not UPDATE]
        assert states == [START, END] * expected[track], (track, states)
    for event in starts:
        a = event.attributes
        assert (event.kind, event.type, a["zone"], a["class"]) == (EventKind.SECURITY, "intrusion", "walkway", "person")
        x1, _, x2, y2 = a["box_norm"]
        assert walkway.contains(np.array([[(x1 + x2) / 2, y2]]))[0]
        assert np.allclose(np.array(a["box_norm"]) * [768, 576, 768, 576], a["box"], atol=1)
        assert event.ts.timestamp() >= local(23, 23) and event.snapshot is not None


def test_intrusion_snapshot_shows_the_person_boxed(night: list[Event]) -> None:
    backend = load_backend(offline_default())
    # Confident sightings only: the drawn box and label hide some of a faint person from the detector's second look.
    starts = [e for e in of(night, "intrusion:walkway", START) if e.attributes["score"] > 0.8][:4]
    assert len(starts) == 4
    images = [decode(e) for e in starts]
    for event, image, found in zip(starts, images, backend.detect(images), strict=True):
        box = event.attributes["box"]
        people = found.xyxy[found.class_name == "person"].tolist()
        assert max(iou(box, p) for p in people) > 0.5, (box, people)
        # The box is drawn in red: along its left edge the picture is red.
        edge = image[box[1] + 5 : box[3] - 5, max(box[0], 0)].astype(int)
        assert np.median(edge[:, 2]) > 180 and np.median(edge[:, :2]) < 90, np.median(edge, axis=0)


def test_no_intrusion_while_disarmed(clip: Clip) -> None:
    only_intrusion = scene(rules=[{"type": "intrusion", "zone": "walkway", "schedule": "night"}])
    assert run(only_intrusion, clip, local(23, 12)) == []


def test_disarming_ends_the_intrusions_under_way(clip: Clip) -> None:
    only_intrusion = scene(rules=[{"type": "intrusion", "zone": "walkway", "schedule": "night", "leave_s": 1}])
    six = local(24, 6)
    events = run(only_intrusion, clip, six - 30)
    starts = [e for e in events if e.state is START]
    assert starts and all(e.ts.timestamp() < six for e in starts)
    ends = [e for e in events if e.state is END]
    assert len(ends) == len(starts) and all(e.ts.timestamp() <= six + 1.5 for e in ends)


def test_line_counts_crossings_each_way(night: list[Event]) -> None:
    both, only_in = of(night, "middle-both"), of(night, "middle-in")
    ways = [e.attributes["direction"] for e in both]
    assert ways.count("in") > 0 and ways.count("out") > 0
    last = both[-1].attributes
    assert last["count_in"] + last["count_out"] == len(both)
    assert len(only_in) == ways.count("in") == last["count_in"]
    assert all(
        e.state is EventState.INSTANT and e.type == "line_crossing" and e.attributes["line"] == "middle" for e in both
    )
    decode(both[0])


def test_loitering_fires_for_those_who_stay(night: list[Event]) -> None:
    starts = of(night, "loitering:walkway", START)
    assert starts and all(e.attributes["duration_s"] >= 15 for e in starts)
    assert len(starts) < len(of(night, "intrusion:walkway", START))
    assert len(of(night, "loitering:walkway", END)) == len(starts)


def test_crowd_of_five(night: list[Event]) -> None:
    starts = of(night, "crowd:view", START)
    assert len(starts) >= 1 and all(e.attributes["count"] >= 5 for e in starts)
    assert len({o["track_id"] for o in starts[0].attributes["objects"]}) == starts[0].attributes["count"]
    assert len(of(night, "crowd:view", END)) == len(starts)
    decode(starts[0])


def test_parked_van_and_car_are_illegally_parked(night: list[Event]) -> None:
    starts = of(night, "illegal_parking:kerb", START)
    assert len(starts) >= 2
    assert {e.attributes["class"] for e in starts} <= {"car", "truck", "bus"}
    enforcement = of(night, "illegal_parking:kerb") + of(night, "zone_occupied:kerb")
    assert {e.kind for e in enforcement} == {EventKind.ENFORCEMENT}, "for the enforcement desks, not the police"
    assert all(e.attributes["duration_s"] >= 30 and e.ts.timestamp() >= local(23, 23, 0, 30) for e in starts)
    occupied = of(night, "zone_occupied:kerb")
    assert [e.state for e in occupied] == [START, END]
    assert occupied[0].attributes["count"] >= 2 and occupied[0].ts.timestamp() >= local(23, 23, 0, 20)


def detections(*objects: tuple[int, str, tuple[float, float, float, float]]) -> Detections:
    """Tracked detections built by hand: (track id, class, box in pixels of a 320x240 frame)."""
    return Detections(
        xyxy=np.array([o[2] for o in objects], dtype=np.float32).reshape(-1, 4),
        confidence=np.full(len(objects), 0.8, dtype=np.float32),
        class_name=np.array([o[1] for o in objects], dtype=object),
        tracker_id=np.array([o[0] for o in objects], dtype=np.int64),
    )


FRAME = np.zeros((240, 320, 3), np.uint8)
YARD_POLYGON = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]
YARD = {"zones": [{"name": "yard", "polygon": YARD_POLYGON}]}


def play(rule: dict[str, object], steps: list[tuple[float, Detections]]) -> list[tuple[float, EventState]]:
    engine = RuleEngine(SceneConfig.model_validate(YARD | {"rules": [rule]}), PLACE, "node-1")
    return [(ts, e.state) for ts, d in steps for e in engine.process(FRAME, d, ts)]


def test_loitering_after_dwell_updates_then_ends() -> None:
    stay = [(float(t), detections((1, "person", (140, 80, 160, 140)))) for t in range(91)]
    passing = [(91.0 + t, detections((2, "person", (100 + 10 * t, 80, 120 + 10 * t, 140)))) for t in range(12)]
    rule = {"type": "loitering", "zone": "yard", "dwell_s": 60, "update_s": 20, "leave_s": 3}
    assert play(rule, stay + passing + [(110.0, detections())]) == [(60, START), (80, UPDATE), (93, END)]


def test_parking_needs_a_vehicle_standing_still() -> None:
    crawling = [(5.0 * t, detections((3, "car", (80 + t, 100, 120 + t, 130)))) for t in range(100)]
    parked = [(500 + 5.0 * t, detections((3, "car", (200, 100, 240, 130)))) for t in range(80)]
    gone = [(900.0 + 5 * t, detections()) for t in range(4)]
    rule = {"type": "illegal_parking", "zone": "yard", "stationary_s": 300, "update_s": None}
    assert play(rule, crawling + parked + gone) == [(800, START), (905, END)]


def test_parking_and_stalls_are_for_the_enforcement_desks_and_intrusion_for_the_police() -> None:
    rules = [
        {"type": "illegal_parking", "zone": "yard", "stationary_s": 10, "update_s": None},
        {"type": "zone_occupied", "zone": "yard", "occupied_s": 10, "classes": ["dining table"]},
        {"type": "intrusion", "zone": "yard"},
    ]
    engine = RuleEngine(SceneConfig.model_validate(YARD | {"rules": rules}), PLACE, "node-1")
    scene = detections(
        (1, "car", (100, 100, 140, 130)), (2, "dining table", (150, 100, 190, 150)), (3, "person", (160, 80, 170, 140))
    )
    kinds = {(e.type, e.kind) for t in range(15) for e in engine.process(FRAME, scene, float(t))}
    assert kinds == {
        ("illegal_parking", EventKind.ENFORCEMENT),
        ("zone_occupied", EventKind.ENFORCEMENT),
        ("intrusion", EventKind.SECURITY),
    }


def test_zone_occupied_by_a_stall_whose_parts_come_and_go() -> None:
    # A stall: a table and an umbrella, re-detected under new track ids, with gaps shorter than leave_s.
    steps = []
    for t in range(0, 1000, 5):
        parts = [
            (100 + t // 100, "dining table", (100, 100, 180, 160)),
            (200 + t // 150, "umbrella", (90, 60, 190, 110)),
        ]
        steps.append((float(t), detections(*parts) if t % 60 != 30 else detections()))
    steps += [(1000.0 + 5 * t, detections()) for t in range(4)]
    rule = {"type": "zone_occupied", "zone": "yard", "classes": ["dining table", "umbrella"], "occupied_s": 600}
    assert play(rule, steps) == [(600, START), (900, UPDATE), (1005, END)]


def test_crowd_needs_the_count_for_the_hold_time() -> None:
    def people(n: int) -> Detections:
        return detections(*[(i + 1, "person", (82 + 14 * i, 90, 94 + 14 * i, 150)) for i in range(n)])

    steps = [(t / 2, people(4)) for t in range(10)] + [(5 + t / 2, people(6)) for t in range(10)]
    steps += [(10 + t / 2, people(2)) for t in range(12)]
    assert play({"type": "crowd", "zone": "yard", "min_count": 5, "hold_s": 3}, steps) == [(8, START), (14.5, END)]


def test_line_ignores_jitter_on_the_line_and_crossings_past_its_ends() -> None:
    counter = LineCounter(LineConfig(name="gate", start=(0.5, 0.25), end=(0.5, 0.75)))
    path = [150, 158, 162, 158, 162, 170, 175]  # x of the feet: jitter within the margin of the line (x=160)
    for x in path:
        counter.trigger(detections((1, "person", (x - 5, 100, x + 5, 150))), FRAME.shape)
    for x in (150, 175):  # feet at y=220, below the line's end: no crossing
        counter.trigger(detections((2, "person", (x - 5, 170, x + 5, 220))), FRAME.shape)
    assert (counter.in_count, counter.out_count) == (1, 0)


def test_zones_survive_a_resolution_change() -> None:
    zone = PolygonZone(YARD_POLYGON)
    d = detections((1, "person", (100, 50, 120, 100)), (2, "person", (10, 50, 30, 100)))
    big = Detections(d.xyxy * 6, d.confidence, d.class_name, d.tracker_id)
    assert zone.trigger(d, (240, 320)).tolist() == zone.trigger(big, (1440, 1920)).tolist() == [True, False]


@pytest.mark.parametrize(
    ("windows", "moment", "armed"),
    [
        (["Mon-Fri 22:00-06:00"], local(27, 23, 59), True),  # Friday night
        (["Mon-Fri 22:00-06:00"], local(28, 5, 59), True),  # its morning after, a Saturday
        (["Mon-Fri 22:00-06:00"], local(28, 6, 0), False),
        (["Mon-Fri 22:00-06:00"], local(23, 5, 0), False),  # Monday morning: Sunday night is not armed
        (["Fri-Mon 09:00-17:00"], local(29, 12), True),  # ranges wrap over the weekend
        (["Fri-Mon 09:00-17:00"], local(25, 12), False),
        (["Sat,Sun 00:00-24:00", "daily 12:00-13:00"], local(25, 12, 30), True),
        (["Sat,Sun 00:00-24:00"], local(29, 23, 59, 59), True),
    ],
)
def test_schedule_windows(windows: list[str], moment: float, armed: bool) -> None:
    assert Schedule(ScheduleConfig(armed=windows), "Asia/Shanghai").armed(moment) is armed


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"schedules": {"night": {"armed": ["Mon-Fri 22:00"]}}}, "expected days and hours"),
        ({"schedules": {"night": {"armed": ["Moon 22:00-06:00"]}}}, "not a day"),
        ({"schedules": {"night": {"armed": ["daily 06:00-06:00"]}}}, "empty or ambiguous"),
        ({"schedules": {"night": {"armed": ["daily 06:00-25:00"]}}}, "not a time of day"),
        ({"schedules": {"night": {"timezone": "Mars/Olympus", "armed": ["daily 00:00-24:00"]}}}, "unknown time zone"),
        ({"zones": [{"name": "walkway", "polygon": [[0, 0], [1.5, 0], [1, 1]]}]}, "less than or equal to 1"),
        ({"zones": [{"name": "walkway", "polygon": [[0, 0], [1, 1]]}]}, "at least 3"),
        ({"lines": [{"name": "middle", "start": [0.5, 0.5], "end": [0.5, 0.5]}]}, "two different points"),
        ({"rules": [{"type": "intrusion", "zone": "lawn"}]}, "no zone named 'lawn'"),
        ({"rules": [{"type": "intrusion", "zone": "walkway", "schedule": "day"}]}, "no schedule named 'day'"),
        ({"rules": [{"type": "crowd", "zone": "view", "min_count": 5, "dwell_s": 3}]}, "Extra inputs"),
        ({"rules": [{"type": "intrusion", "zone": "view"}] * 2}, "distinct names"),
        ({"rules": [{"type": "trespass", "zone": "view"}]}, "does not match any of the expected tags"),
    ],
)
def test_scene_config_refuses_mistakes(change: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        scene(**change)
