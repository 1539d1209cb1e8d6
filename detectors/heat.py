"""Heat rules: a fixed temperature, and a rate of rise over a window, for one sensor's temperature.

The rate is the least-squares slope of the window's readings, not the
difference of two of them, so that a noisy sensor reporting often does not
look like a fire. Defaults follow the common heat detector ratings: 57 °C (135 °F) is the lowest
"ordinary" temperature class of fixed-temperature detectors in NFPA 72, and
rate-of-rise detectors listed to UL 521 typically operate at 8.3 °C (15 °F)
per minute.

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> rule = HeatRule(HeatConfig())
    >>> t0 = datetime(2024, 5, 1, tzinfo=UTC)
    >>> rule.update(t0, 22.0)
    ({'heat': False}, {'temperature_c': 22.0})
    >>> rule.update(t0 + timedelta(seconds=30), 28.0)
    ({'heat': False, 'rate_of_rise': True}, {'temperature_c': 28.0, 'rate_c_per_min': 12.0})
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime

from pydantic import Field

from alerts.core.config import ConfigModel

log = logging.getLogger(__name__)


class HeatConfig(ConfigModel):
    """When one sensor's temperature is a fire."""

    quantity: str = Field(
        default="temperature",
        min_length=1,
        title="Quantity",
        description="The reading to watch, e.g. ds18b20.temperature for a Tasmota probe.",
    )
    threshold_c: float = Field(
        default=57.0, title="Fixed temperature", description="Alarm at or above this temperature, in °C."
    )
    hysteresis_c: float = Field(
        default=2.0,
        ge=0,
        title="Hysteresis",
        description="The alarm clears only this many °C below the threshold, so a reading hovering at it is one alarm.",
    )
    rate_c_per_min: float = Field(
        default=8.3, gt=0, title="Rate of rise", description="Alarm when the temperature rises this fast, in °C/min."
    )
    window_s: float = Field(
        default=60.0, gt=0, title="Rate window", description="The rate is fitted to the readings this recent."
    )
    min_span_s: float = Field(
        default=20.0,
        gt=0,
        title="Shortest span",
        description="A rate needs readings spanning at least this many seconds, so noise between two close readings "
        "is no fire.",
    )


class _Slope:
    """Least-squares slope of the (time, value) points of a sliding window, in constant time per point.

    Times count from an origin that moves up now and then, which also sums the window afresh, so the
    running sums neither lose precision nor drift.
    """

    def __init__(self) -> None:
        self.points: deque[tuple[float, float]] = deque()
        self._origin: datetime | None = None
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # n, Σt, Σv, Σt², Σtv

    def _add(self, t: float, v: float, sign: float) -> None:
        for i, term in enumerate((1.0, t, v, t * t, t * v)):
            self._sums[i] += sign * term

    def append(self, ts: datetime, value: float, window_s: float) -> None:
        origin = self._origin
        if origin is None or (ts - origin).total_seconds() > 10 * window_s:
            self._rebase(ts)
            origin = ts
        t = (ts - origin).total_seconds()
        self.points.append((t, value))
        self._add(t, value, 1.0)
        while t - self.points[0][0] > window_s:
            self._add(*self.points.popleft(), -1.0)

    def _rebase(self, ts: datetime) -> None:
        shift = (ts - self._origin).total_seconds() if self._origin is not None else 0.0
        self._origin = ts
        old, self.points = self.points, deque()
        self._sums = [0.0] * 5
        for t, v in old:
            self.points.append((t - shift, v))
            self._add(t - shift, v, 1.0)

    def span(self) -> float:
        return self.points[-1][0] - self.points[0][0]

    def per_second(self) -> float:
        n, st, sv, stt, stv = self._sums
        return (n * stv - st * sv) / (n * stt - st * st)


class HeatRule:
    """Judges each new temperature of one sensor; keeps the readings of the rate window."""

    def __init__(self, settings: HeatConfig) -> None:
        self.settings = settings
        self.hot = False
        self._last: datetime | None = None
        self._slope = _Slope()

    def update(self, ts: datetime, celsius: float) -> tuple[dict[str, bool], dict[str, float]]:
        """({condition: on} for what this reading can judge, details for the event)."""
        s = self.settings
        self.hot = celsius >= s.threshold_c or (self.hot and celsius > s.threshold_c - s.hysteresis_c)
        conditions, details = {"heat": self.hot}, {"temperature_c": celsius}
        # A late or repeated reading (QoS 1 may deliver twice) says nothing about the rate now.
        if self._last is not None and ts <= self._last:
            return conditions, details
        self._last = ts
        self._slope.append(ts, celsius, s.window_s)
        if self._slope.span() >= s.min_span_s:
            rate = self._slope.per_second() * 60.0
            conditions["rate_of_rise"] = rate >= s.rate_c_per_min
            details["rate_c_per_min"] = round(rate, 2)
        return conditions, details
