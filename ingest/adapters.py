"""Sensor payload adapters by name, and the routing of local topics to configured devices.

A node subscribes to each adapter's wildcard filters, not to each sensor's
topics, so that a device nobody configured is noticed (and dead-lettered as
an unknown device) rather than silently missed. Mosquitto delivers a message
once per matching subscription, so filters that another one covers are left
out.

Example:
    >>> routes = SensorRoutes([("smoke-1", "zigbee2mqtt", "zigbee2mqtt/hall-smoke"),
    ...                        ("heat-1", "tasmota", "tele/kitchen/SENSOR")])
    >>> routes.subscriptions()
    ['tele/+/LWT', 'tele/+/SENSOR', 'zigbee2mqtt/#']
    >>> routes.route("zigbee2mqtt/hall-smoke/availability")
    Route(device='smoke-1', adapter='zigbee2mqtt', availability=True)
    >>> routes.route("tele/unknown/SENSOR") is None, routes.is_unknown_device("tele/unknown/SENSOR")
    (True, True)
    >>> routes.is_unknown_device("zigbee2mqtt/bridge/logging")
    False
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from paho.mqtt.client import topic_matches_sub

from ingest.native import NATIVE
from ingest.sensors import Adapter
from ingest.tasmota import TASMOTA
from ingest.zigbee2mqtt import ZIGBEE2MQTT

log = logging.getLogger(__name__)

AdapterName = Literal["zigbee2mqtt", "tasmota", "native"]

ADAPTERS: dict[str, Adapter] = {adapter.name: adapter for adapter in (ZIGBEE2MQTT, TASMOTA, NATIVE)}
"""Adapters by the name a node config gives in ``sensors[].adapter``."""


@dataclass(frozen=True, slots=True)
class Route:
    """The configured device a topic belongs to, and whether it is that device's availability topic."""

    device: str
    adapter: str
    availability: bool


def _covers(wide: str, narrow: str) -> bool:
    """Whether every topic that filter ``narrow`` matches is matched by filter ``wide`` too."""
    wide_parts, narrow_parts = wide.split("/"), narrow.split("/")
    for i, part in enumerate(wide_parts):
        if part == "#":
            return True
        if i >= len(narrow_parts) or narrow_parts[i] == "#" or part not in ("+", narrow_parts[i]):
            return False
    return len(wide_parts) == len(narrow_parts)


class SensorRoutes:
    """Built from (device id, adapter name, state topic) of each configured sensor."""

    def __init__(self, sensors: Iterable[tuple[str, str, str]]) -> None:
        self._routes: dict[str, Route] = {}
        self._filters: dict[str, Adapter] = {}
        for device, name, topic in sensors:
            adapter = ADAPTERS[name]
            self._routes[topic] = Route(device, name, availability=False)
            self._routes[adapter.availability_topic(topic)] = Route(device, name, availability=True)
            self._filters.update(dict.fromkeys(adapter.wildcards(topic), adapter))

    def subscriptions(self) -> list[str]:
        """The filters to subscribe to, none covered by another."""
        return sorted(f for f in self._filters if not any(g != f and _covers(g, f) for g in self._filters))

    def route(self, topic: str) -> Route | None:
        return self._routes.get(topic)

    def is_unknown_device(self, topic: str) -> bool:
        """True for a topic of no configured device that an adapter says is a device's output."""
        if topic in self._routes:
            return False
        return any(topic_matches_sub(f, topic) and a.is_device_topic(topic) for f, a in self._filters.items())
