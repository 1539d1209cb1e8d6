"""Downsampling at the edge: a sensor that chatters sends fewer readings upstream.

Of each sensor's quantities, at most one reading per ``min_interval_s`` goes
on, unless its value moved further than that quantity's deadband since the
last one that went. The caller keeps every reading of a message that raised
an event (an alarm flag changed, a threshold was crossed): those are the
readings a dispatcher looks at.

Example:
    >>> from datetime import timedelta
    >>> from alerts.core.models import Place, Reading
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="t1")
    >>> thin = Downsampler({"t1": DownsampleConfig(min_interval_s=10, deadband={"temperature": 0.5})})
    >>> first = Reading(place=place, quantity="temperature", value=21.0)
    >>> later = lambda s, v: first.model_copy(update={"ts": first.ts + timedelta(seconds=s), "value": v})
    >>> [len(thin.filter([r])) for r in (first, later(2, 21.2), later(4, 22.0), later(15, 22.1))]
    [1, 0, 1, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from pydantic import Field

from alerts.core.config import ConfigModel
from alerts.core.models import Reading

log = logging.getLogger(__name__)


class DownsampleConfig(ConfigModel):
    """How many of one sensor's readings go upstream."""

    min_interval_s: float = Field(
        default=0.0,
        ge=0,
        title="Minimum interval",
        description="At most one reading of each quantity per this many seconds goes upstream; 0 sends every one.",
    )
    deadband: dict[str, float] = Field(
        default_factory=dict,
        title="Deadband",
        description="Quantity to the change that goes upstream even within the interval, e.g. {temperature: 0.5}; "
        "other quantities wait for the interval.",
    )


class Downsampler:
    """Remembers, per sensor and quantity, the last reading that went upstream."""

    def __init__(self, settings: Mapping[str, DownsampleConfig]) -> None:
        self.settings = settings
        self._sent: dict[tuple[str, str], tuple[datetime, float]] = {}

    def filter(self, readings: list[Reading], keep_all: bool = False) -> list[Reading]:
        """The readings to send; all of them when ``keep_all``."""
        kept = []
        for reading in readings:
            device = reading.place.device or ""
            settings = self.settings.get(device)
            key = (device, reading.quantity)
            last = self._sent.get(key)
            if not keep_all and settings is not None and last is not None:
                elapsed = (reading.ts - last[0]).total_seconds()
                band = settings.deadband.get(reading.quantity)
                if elapsed < settings.min_interval_s and (band is None or abs(reading.value - last[1]) <= band):
                    continue
            self._sent[key] = (reading.ts, reading.value)
            kept.append(reading)
        return kept
