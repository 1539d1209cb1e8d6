"""zigbee2mqtt: ``<base>/<friendly_name>`` state messages and ``<base>/<friendly_name>/availability``.

A state message is one flat JSON object (``smoke``, ``smoke_density``, ``co``,
``gas``, ``temperature``, ``humidity``, ``battery``, ``battery_low``,
``tamper``, ``test``, ``linkquality`` and whatever else the device exposes).
Availability is ``{"state": "online"}`` (zigbee2mqtt 1.28 and later) or plain
``online``/``offline``. Friendly names may contain slashes, so every topic
under the base is a device's except the bridge's own (``<base>/bridge/...``)
and commands to devices (``.../set``, ``.../get``).

Example:
    >>> from datetime import UTC, datetime
    >>> from alerts.core.models import Place
    >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1")
    >>> decoded = ZIGBEE2MQTT.parse(b'{"smoke": true, "battery": 87}', place, datetime.now(UTC))
    >>> sorted((r.quantity, r.value) for r in decoded.readings)
    [('battery', 87.0), ('smoke', 1.0)]
    >>> ZIGBEE2MQTT.wildcards("zigbee2mqtt/hall/smoke"), ZIGBEE2MQTT.is_device_topic("zigbee2mqtt/bridge/state")
    (['zigbee2mqtt/#'], False)
"""

from __future__ import annotations

import logging
from datetime import datetime

from alerts.core.models import Place
from ingest.sensors import Adapter, Decoded, decode_json_object, readings_from

log = logging.getLogger(__name__)

AVAILABILITY = "availability"
_COMMANDS = frozenset({"set", "get"})


class Zigbee2Mqtt(Adapter):
    name = "zigbee2mqtt"

    def check_topic(self, topic: str) -> None:
        base, _, friendly_name = topic.partition("/")
        if not base or not friendly_name:
            raise ValueError("a zigbee2mqtt topic is <base>/<friendly_name>, e.g. zigbee2mqtt/hallway-smoke")
        if not self.is_device_topic(topic) or topic.endswith(f"/{AVAILABILITY}"):
            raise ValueError("name the device's state topic, not the bridge's, a command or availability")

    def availability_topic(self, topic: str) -> str:
        return f"{topic}/{AVAILABILITY}"

    def wildcards(self, topic: str) -> list[str]:
        return [f"{topic.partition('/')[0]}/#"]

    def is_device_topic(self, topic: str) -> bool:
        parts = topic.split("/")
        return len(parts) > 1 and parts[1] != "bridge" and _COMMANDS.isdisjoint(parts[2:])

    def parse(self, payload: bytes, place: Place, now: datetime) -> Decoded:
        return readings_from(decode_json_object(payload), place, now)


ZIGBEE2MQTT = Zigbee2Mqtt()
