"""The one debouncer behind video rules, tamper checks, camera offline and (next) sensor states."""

from __future__ import annotations

from alerts.core.debounce import Debounce


def feed(switch: Debounce, reports: list[tuple[float, bool | None]]) -> list[tuple[float, bool]]:
    """(time, new state) of every turn of the switch."""
    turns = []
    for ts, seen in reports:
        turned = switch.update(seen, ts)
        if turned is not None:
            turns.append((ts, turned))
    return turns


def test_a_track_that_flickers_is_one_condition_and_ends_leave_time_after_its_last_sighting() -> None:
    # A rule's track: seen four times a second, missing for a second (shorter than the 2 s leave time), then gone.
    frames: list[tuple[float, bool | None]] = [(t / 4, t < 20 or 25 <= t < 40 or None) for t in range(60)]
    loitering = Debounce(on_s=3.0, off_s=2.0)
    assert feed(loitering, frames) == [(3.0, True), (11.75, False)]
    assert (loitering.since, loitering.last_seen) == (0.0, 9.75)


def test_a_short_condition_never_turns_on_and_a_gap_of_the_leave_time_starts_a_new_run() -> None:
    switch = Debounce(on_s=3.0, off_s=1.0)
    assert feed(switch, [(0, True), (1, True), (2, None), (2.5, True), (4, None), (5, True), (7, True)]) == []
    assert switch.since == 5 and switch.held
    assert feed(switch, [(8, True)]) == [(8, True)]


def test_a_reported_off_cancels_a_pending_start_and_counts_from_itself() -> None:
    # A tamper check every second: dark, one bright check, dark again; then bright for good.
    blinded = Debounce(on_s=3.0, off_s=3.0)
    reports: list[tuple[float, bool | None]] = [(0, True), (1, True), (2, False), (3, True), (4, True), (5, True)]
    assert feed(blinded, reports) == []
    assert feed(blinded, [(6, True)]) == [(6, True)]
    # One bright check does not end it; three seconds of bright checks do, counted from the first of them.
    assert feed(blinded, [(7, False), (8, True), (9, False), (10, False), (11, False), (12, False)]) == [(12, False)]


def test_not_looking_holds_nothing_still_but_an_off_report_outranks_the_last_sighting() -> None:
    switch = Debounce(on_s=0.0, off_s=5.0)
    assert feed(switch, [(0, True), (4, False), (6, None), (8, None), (9, None)]) == [(0, True), (9, False)]


def test_zero_times_make_an_edge_detector_whatever_order_the_times_come_in() -> None:
    smoke = Debounce(0, 0)
    reports: list[tuple[float, bool | None]] = [(5, False), (10, True), (11, True), (9, False), (12, False), (13, True)]
    assert feed(smoke, reports) == [(10, True), (9, False), (13, True)]


def test_a_camera_that_never_sends_a_frame_goes_offline_after_the_grace_from_its_start() -> None:
    frames = Debounce(0.0, 30.0)
    assert frames.update(True, 100.0) is True  # started: the grace runs from here
    assert [frames.update(None, t) for t in (110.0, 129.9, 130.0, 131.0)] == [None, None, False, None]
    assert frames.update(True, 150.0) is True and frames.last_seen == 150.0
