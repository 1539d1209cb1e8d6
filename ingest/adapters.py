"""Payload adapters: a device's own MQTT format in, Readings out.

A payload that is not JSON, or whose known fields have the wrong type, raises
``PayloadError`` with a reason fit for the dead-letter table. Unknown fields
are kept: numeric ones become readings under their own name.

Example:
    >>> from alerts.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> readings = parse_zigbee2mqtt(b'{"smoke": true, "battery": 87}', place)
    >>> sorted((r.quantity, r.value) for r in readings)
    [('battery', 87.0), ('smoke', 1.0)]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from alerts.models import Place, Reading, utc_now

log = logging.getLogger(__name__)


class PayloadError(ValueError):
    """A payload that cannot be turned into readings; the message is the reason."""


class Zigbee2MqttPayload(BaseModel):
    """The fields zigbee2mqtt publishes for smoke, gas, CO and climate sensors.

    Strict, so ``"smoke": "yes"`` is refused rather than guessed at.
    """

    model_config = ConfigDict(strict=True, extra="allow")

    smoke: bool | None = None
    gas: bool | None = None
    carbon_monoxide: bool | None = None
    tamper: bool | None = None
    battery_low: bool | None = None
    test: bool | None = None
    smoke_density: float | None = None
    co: float | None = None
    temperature: float | None = None
    humidity: float | None = None
    battery: float | None = None
    voltage: float | None = None
    linkquality: float | None = None


UNITS: dict[str, str] = {
    "temperature": "°C",
    "humidity": "%",
    "battery": "%",
    "voltage": "mV",
    "co": "ppm",
    "smoke_density": "dB/m",
    "linkquality": "lqi",
}


def _decode_json_object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def parse_zigbee2mqtt(payload: bytes, place: Place) -> list[Reading]:
    """Turns one zigbee2mqtt state message into readings (flags as 1.0/0.0)."""
    data = _decode_json_object(payload)
    try:
        fields = Zigbee2MqttPayload.model_validate(data).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise PayloadError(f"wrong field types: {_validation_reason(exc)}") from exc
    now = utc_now()
    readings = []
    for quantity, value in fields.items():
        # Unknown fields that are not numbers (strings, nested objects) carry no measurement.
        if isinstance(value, bool | int | float):
            readings.append(
                Reading(ts=now, place=place, quantity=quantity, value=float(value), unit=UNITS.get(quantity, ""))
            )
    return readings


Adapter = Callable[[bytes, Place], list[Reading]]

ADAPTERS: dict[str, Adapter] = {"zigbee2mqtt": parse_zigbee2mqtt}
"""Adapters by the name a node config gives in ``sensors[].adapter``."""
