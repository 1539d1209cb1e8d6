"""What every sensor adapter shares: known quantities, physical ranges, availability, the result type.

An adapter turns a device's own payload into named values (``smoke``,
``ds18b20.temperature``) and hands them to ``readings_from``, which keeps
every number and flag as a Reading and refuses, field by field, what has the
wrong type or lies outside the physical range. A refused field never costs
the rest of the message: a smoke alarm still counts when the battery field
next to it is garbage. Malformed JSON, or a payload of the wrong shape,
raises ``PayloadError`` and costs the whole message.

Parsing is bounded, because one payload must never cost more than itself:
``decode_json`` refuses a payload over ``MAX_PAYLOAD_BYTES`` (a node may set a
smaller cap per sensor), nesting deeper than ``MAX_DEPTH`` (checked on the raw
bytes before ``json.loads``, which would raise ``RecursionError``). Each of
these refusals is a ``PayloadError`` whose message is the dead-letter reason.
A number longer than ``MAX_NUMBER_CHARS`` (``int()`` raises ``ValueError``
past 4,300 digits and costs time well before) and ``NaN``/``Infinity`` (not
JSON, though Python reads them) cost only their field, like any other value
out of range: a smoke alarm next to them still counts.

Example:
    >>> from datetime import UTC, datetime
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="d")
    >>> decoded = readings_from({"smoke": True, "temperature": 900, "note": "hi"}, place, datetime.now(UTC))
    >>> [(r.quantity, r.value) for r in decoded.readings]
    [('smoke', 1.0)]
    >>> decoded.problems
    ['temperature: 900 °C is outside the physical range -40..125 °C']
    >>> parse_availability(b'{"state": "offline"}').online
    False
    >>> try:
    ...     decode_json(b"[" * 10_000)
    ... except PayloadError as exc:
    ...     print(exc)
    not JSON: nested deeper than 32
    >>> long = decode_json(b'{"smoke": true, "battery": ' + b"9" * 5000 + b"}")
    >>> decoded = readings_from(long, place, datetime.now(UTC))
    >>> [(r.quantity, r.value) for r in decoded.readings], decoded.problems
    ([('smoke', 1.0)], ['battery: a number of 5000 characters (at most 40)'])
"""

from __future__ import annotations

import json
import logging
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from alerts.core.models import Place, Reading

log = logging.getLogger(__name__)


class PayloadError(ValueError):
    """A payload that cannot be read at all; the message is the dead-letter reason."""


MAX_PAYLOAD_BYTES = 64 * 1024
"""The largest payload any sensor may send; a zigbee2mqtt state message is a few hundred bytes."""
MAX_DEPTH = 32
"""Deepest nesting of objects and arrays; Tasmota nests two levels."""
MAX_NUMBER_CHARS = 40
"""Longest number literal: a double needs at most 24 characters."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a known field holds: a true/false flag, or a number with a unit and the range it can physically take."""

    flag: bool = False
    unit: str = ""
    low: float = -math.inf
    high: float = math.inf


_FLAG = Quantity(flag=True)

QUANTITIES: dict[str, Quantity] = {
    "smoke": _FLAG,
    "gas": _FLAG,
    "carbon_monoxide": _FLAG,
    "tamper": _FLAG,
    "battery_low": _FLAG,
    "test": _FLAG,
    # -40..125 °C is what room sensors (and their usual chips: SHT3x, DS18B20, BME280) can measure;
    # anything beyond is a broken probe, not a fire reading.
    "temperature": Quantity(unit="°C", low=-40.0, high=125.0),
    "humidity": Quantity(unit="%", low=0.0, high=100.0),
    "battery": Quantity(unit="%", low=0.0, high=100.0),
    "co": Quantity(unit="ppm", low=0.0),
    "smoke_density": Quantity(unit="dB/m", low=0.0),
    "voltage": Quantity(unit="mV", low=0.0),
    "linkquality": Quantity(unit="lqi", low=0.0, high=255.0),
}
"""Known fields. A flag is known by its exact name; a number also by its last dotted part
(Tasmota's ``ds18b20.temperature`` is a temperature)."""


def _quantity(name: str) -> Quantity | None:
    known = QUANTITIES.get(name)
    if known is not None:
        return known
    base = QUANTITIES.get(name.rpartition(".")[2])
    return base if base is not None and not base.flag else None


def _number_text(value: float) -> str:
    return f"{value:g}"


def _check(name: str, value: Any) -> tuple[float | None, str | None]:
    """(value as a float, None), (None, why it is refused), or (None, None) for text that measures nothing."""
    if isinstance(value, Unreadable):
        return None, f"{name}: {value.why}"
    spec = _quantity(name)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec is not None and spec.flag:
        if not isinstance(value, bool):
            return None, f"{name}: expected a bool (true or false), got {value!r}"
        return float(value), None
    if spec is not None and not is_number:
        return None, f"{name}: expected a number, got {value!r}"
    if isinstance(value, bool):
        return float(value), None
    if not is_number:
        return None, None
    if not math.isfinite(value):
        return None, f"{name}: expected a finite number, got {value!r}"
    if spec is not None and not spec.low <= value <= spec.high:
        lo, hi = ("" if math.isinf(v) else _number_text(v) for v in (spec.low, spec.high))
        where = f">= {lo}" if not hi else f"{lo}..{hi}"
        return None, f"{name}: {_number_text(value)} {spec.unit} is outside the physical range {where} {spec.unit}"
    return float(value), None


def unit_of(name: str) -> str:
    spec = _quantity(name)
    return spec.unit if spec is not None else ""


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one device message says: readings, fields refused (with why), or whether the device is online."""

    readings: list[Reading] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    online: bool | None = None


def readings_from(fields: dict[str, Any], place: Place, ts: datetime) -> Decoded:
    """One Reading per number or flag in ``fields``; wrong types and impossible values become problems."""
    if ts.tzinfo is None:
        raise ValueError("a reading's time needs its zone")
    readings, problems = [], []
    ts = ts.astimezone(UTC)  # made with Reading.checked, which takes values as they are
    for name, value in fields.items():
        number, problem = _check(name, value)
        if problem is not None:
            problems.append(problem)
        elif number is not None:
            readings.append(Reading.checked(place, name, number, unit_of(name), ts))
    return Decoded(readings=readings, problems=problems)


def _too_deep(payload: bytes) -> bool:
    """Whether objects and arrays nest deeper than MAX_DEPTH, brackets inside strings not counted. Nesting is at
    most the number of opening brackets, which is all a sensor's small message costs to check.

    >>> _too_deep(b'{"a": [1, {"b": "[[["}]}'), _too_deep(b"[" * 33), _too_deep(b'["' + b"[" * 40 + b'"]')
    (False, True, False)
    """
    if payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH:
        return False
    return _depth(payload) > MAX_DEPTH


def _depth(payload: bytes) -> int:
    """How deep objects and arrays nest, brackets inside strings not counted."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A JSON value left unread, in place of the value; its field is refused with ``why``."""

    why: str


def _number(text: str, kind: type[int] | type[float]) -> int | float | Unreadable:
    if len(text) > MAX_NUMBER_CHARS:
        return Unreadable(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    return kind(text)


_DECODER = json.JSONDecoder(parse_int=lambda text: _number(text, int), parse_float=lambda text: _number(text, float))
"""Made once: ``json.loads`` with hooks builds a decoder for every message."""


def decode_json(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """The JSON value of ``payload``; PayloadError for anything unreadable or out of bounds."""
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes is over the cap of {max_bytes}")
    if _too_deep(payload):
        raise PayloadError(f"not JSON: nested deeper than {MAX_DEPTH}")
    try:
        return _DECODER.decode(payload.decode(json.detect_encoding(payload)))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError(f"not JSON: {exc}") from exc


def decode_json_object(payload: bytes) -> dict[str, Any]:
    data = decode_json(payload)
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_availability(payload: bytes) -> Decoded:
    """``online``/``offline`` as plain text (any case: Tasmota's LWT says ``Online``) or ``{"state": ...}``."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        state = decode_json_object(payload).get("state")
        text = state if isinstance(state, str) else ""
    online = {"online": True, "offline": False}.get(text.lower())
    if online is None:
        raise PayloadError(f"availability must be online or offline, got {payload[:40]!r}")
    return Decoded(online=online)


class Adapter(ABC):
    """One payload format: which topics its devices use, and how to read their messages.

    A sensor's configured ``topic`` is its state topic; the adapter derives the
    rest from it: where the device says it is online or offline, and the
    wildcard filters that catch devices nobody configured.
    """

    name: ClassVar[str]

    @abstractmethod
    def check_topic(self, topic: str) -> None:
        """Raises ValueError when ``topic`` is not a state topic of this format."""

    @abstractmethod
    def availability_topic(self, topic: str) -> str:
        """Where the device of state topic ``topic`` says whether it is online."""

    @abstractmethod
    def wildcards(self, topic: str) -> list[str]:
        """Filters that catch every device of this format that publishes where ``topic``'s device does."""

    @abstractmethod
    def is_device_topic(self, topic: str) -> bool:
        """Whether a topic the wildcards caught is a device's own output (not a command or the bridge's)."""

    @abstractmethod
    def parse(self, payload: bytes, place: Place, now: datetime) -> Decoded:
        """Readings of one state message that arrived at ``now``."""
