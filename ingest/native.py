"""patrolnet's own sensor format, for devices that can be programmed (ESP32 and the like).

A device publishes its state on ``<base>/<device>`` (``patrolnet/sensors/<device>``
by convention) as one JSON object, ``NativeMessage``::

    {"device": "b2-kitchen-heat", "ts": "2024-05-01T10:00:00Z",
     "readings": {"temperature": 21.5, "smoke": false, "battery": 80}, "test": false}

Every field is optional. ``readings`` holds numbers, and true/false for
flags (``smoke``, ``gas``, ``carbon_monoxide``, ``tamper``, ``battery_low``);
other top-level numbers are kept as readings too. ``ts`` must carry a zone;
without it the arrival time counts. A ``ts`` before 2000 or more than a day
ahead of the arrival time is a clock gone wrong, and refuses the message. The device sets its MQTT last will to
``offline`` on ``<base>/<device>/availability`` and publishes ``online``
there, retained, when it connects.

Example:
    >>> from datetime import UTC, datetime
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="heat-1")
    >>> payload = b'{"ts": "2024-05-01T10:00:00+08:00", "readings": {"temperature": 21.5}, "test": true, "rssi": -61}'
    >>> [(r.quantity, r.value, r.ts.hour) for r in NATIVE.parse(payload, place, datetime.now(UTC)).readings]
    [('temperature', 21.5, 2), ('rssi', -61.0, 2), ('test', 1.0, 2)]
    >>> NATIVE.parse(b'{"ts": "9999-12-31T23:59:59-14:00"}', place, datetime.now(UTC))
    Traceback (most recent call last):
    ingest.sensors.PayloadError: ts 9999-12-31T23:59:59-14:00 is outside 2000-01-01 .. a day from now
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from alerts.core.models import Place
from ingest.sensors import Adapter, Decoded, PayloadError, decode_json_object, readings_from

log = logging.getLogger(__name__)

AVAILABILITY = "availability"
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""Older device times are a clock that never synced (1970) or garbage."""
AHEAD = timedelta(days=1)
"""How far ahead of the node's clock a device time may be."""


class NativeMessage(BaseModel):
    """One state message of a device that speaks patrolnet's own format."""

    model_config = ConfigDict(extra="allow")

    device: StrictStr | None = Field(
        default=None, title="Device", description="The sensor's id; when given, it must be the one its topic names."
    )
    ts: AwareDatetime | None = Field(
        default=None, title="Time", description="When it was measured, ISO 8601 with a zone; else the arrival time."
    )
    readings: dict[str, Any] = Field(
        default_factory=dict,
        title="Readings",
        description="Quantity to value: a number, or true/false for a flag such as smoke.",
    )
    test: StrictBool | None = Field(
        default=None, title="Test", description="True while the device is in test mode or its test button is pressed."
    )


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


class Native(Adapter):
    name = "native"

    def check_topic(self, topic: str) -> None:
        base, _, device = topic.rpartition("/")
        if not base or not device or device == AVAILABILITY:
            raise ValueError("a native topic is <base>/<device>, e.g. patrolnet/sensors/kitchen-heat")

    def availability_topic(self, topic: str) -> str:
        return f"{topic}/{AVAILABILITY}"

    def wildcards(self, topic: str) -> list[str]:
        return [f"{topic.rpartition('/')[0]}/#"]

    def is_device_topic(self, topic: str) -> bool:
        return True

    def parse(self, payload: bytes, place: Place, now: datetime) -> Decoded:
        try:
            message = NativeMessage.model_validate(decode_json_object(payload))
        except ValidationError as exc:
            raise PayloadError(f"wrong field types: {_reason(exc)}") from exc
        if message.device is not None and message.device != place.device:
            raise PayloadError(f"device {message.device!r} publishes on the topic of {place.device!r}")
        if message.ts is not None and not EARLIEST <= message.ts <= now + AHEAD:
            raise PayloadError(f"ts {message.ts.isoformat()} is outside 2000-01-01 .. a day from now")
        fields = {**message.readings, **(message.model_extra or {})}
        if message.test is not None:
            fields["test"] = message.test
        return readings_from(fields, place, message.ts or now)


NATIVE = Native()
