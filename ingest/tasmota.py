"""Tasmota: ``tele/<device>/SENSOR`` telemetry and the ``tele/<device>/LWT`` last will.

Telemetry nests one object per attached sensor, e.g.
``{"Time": "2024-05-01T10:00:00", "DS18B20": {"Id": "0316A2", "Temperature": 21.5}, "TempUnit": "C"}``;
each number becomes a reading named ``<sensor>.<field>`` in lower case
(``ds18b20.temperature``), ``ON``/``OFF`` become flags, and temperatures sent
in Fahrenheit (``"TempUnit": "F"``) are converted so that every rule works in
°C. The device clock in ``Time`` is not trusted: it is local time without a
zone, and a device that lost NTP says 1970. The LWT says ``Online`` or ``Offline``.

Example:
    >>> from datetime import UTC, datetime
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="heat-1")
    >>> payload = b'{"Time": "2024-05-01T10:00:00", "DS18B20": {"Temperature": 71.6}, "TempUnit": "F"}'
    >>> [(r.quantity, r.value, r.unit) for r in TASMOTA.parse(payload, place, datetime.now(UTC)).readings]
    [('ds18b20.temperature', 22.0, '°C')]
    >>> TASMOTA.availability_topic("tele/kitchen/SENSOR")
    'tele/kitchen/LWT'
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from alerts.core.models import Place
from ingest.sensors import Adapter, Decoded, decode_json_object, readings_from

log = logging.getLogger(__name__)

SENSOR = "SENSOR"
LWT = "LWT"
_SWITCH = {"ON": True, "OFF": False}
_TEMPERATURES = frozenset({"temperature", "dewpoint"})


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key.lower()}"
        if isinstance(value, dict):
            fields.update(_flatten(value, f"{name}."))
        else:
            fields[name] = _SWITCH.get(value, value) if isinstance(value, str) else value
    return fields


def _fahrenheit_to_celsius(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        name: round((value - 32.0) * 5.0 / 9.0, 2)
        if name.rpartition(".")[2] in _TEMPERATURES and isinstance(value, int | float) and not isinstance(value, bool)
        else value
        for name, value in fields.items()
    }


class Tasmota(Adapter):
    name = "tasmota"

    def check_topic(self, topic: str) -> None:
        parts = topic.split("/")
        if len(parts) != 3 or not all(parts) or parts[2] != SENSOR:
            raise ValueError("a Tasmota topic is <prefix>/<device>/SENSOR, e.g. tele/kitchen-heat/SENSOR")

    def availability_topic(self, topic: str) -> str:
        return f"{topic.rpartition('/')[0]}/{LWT}"

    def wildcards(self, topic: str) -> list[str]:
        prefix = topic.partition("/")[0]
        return [f"{prefix}/+/{SENSOR}", f"{prefix}/+/{LWT}"]

    def is_device_topic(self, topic: str) -> bool:
        return True

    def parse(self, payload: bytes, place: Place, now: datetime) -> Decoded:
        data = decode_json_object(payload)
        fields = _flatten(data)
        if data.get("TempUnit") == "F":
            fields = _fahrenheit_to_celsius(fields)
        return readings_from(fields, place, now)


TASMOTA = Tasmota()
