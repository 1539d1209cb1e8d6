"""Simulated fire sensors for the demo: a real broker, made-up smoke and heat, each in its own format.

Each sensor says it is online, then reports its state every few seconds in
its adapter's format (zigbee2mqtt, Tasmota telemetry, or the native JSON);
now and then one goes into alarm for a while (smoke, or heat on a Tasmota
probe) and clears, and once in a while a broken payload is sent so the
dead-letter path shows too.

Example:
    >>> from edge.config import SensorConfig
    >>> heat = SensorConfig(id="heat-1", adapter="tasmota", topic="tele/kitchen/SENSOR")
    >>> sensor_payload(heat, alarm=True, battery=80, temperature=21.0)["DS18B20"]
    {'Temperature': 61.0}
"""

from __future__ import annotations

import json
import logging
import random
import threading
from typing import Any

from alerts.core.models import utc_now
from alerts.core.mqtt import connect, make_client
from edge.config import SensorConfig
from ingest.adapters import ADAPTERS

log = logging.getLogger(__name__)

ALARM_HEAT_C = 40.0
"""Added to the room temperature in alarm: well past the 57 °C heat threshold."""


def sensor_payload(sensor: SensorConfig, alarm: bool, battery: int, temperature: float) -> dict[str, Any]:
    """One state message of ``sensor`` in its own format."""
    if sensor.adapter == "tasmota":
        heat = temperature + (ALARM_HEAT_C if alarm else 0.0)
        return {"Time": utc_now().strftime("%Y-%m-%dT%H:%M:%S"), "DS18B20": {"Temperature": heat}, "TempUnit": "C"}
    state = {"smoke": alarm, "battery": battery, "temperature": temperature}
    if sensor.adapter == "native":
        return {"device": sensor.id, "ts": utc_now().isoformat(), "readings": state, "test": False}
    return {**state, "battery_low": battery < 20, "tamper": False, "linkquality": 120}


class SensorSimulator:
    def __init__(
        self, url: str, sensors: list[SensorConfig], period_s: float = 5.0, alarm_every_s: float = 45.0
    ) -> None:
        self.sensors = sensors
        self.period_s = period_s
        self.alarm_every_s = alarm_every_s
        self._rng = random.Random(7)
        self._battery = {s.id: 100.0 for s in sensors}
        self._temperature = {s.id: 21.0 for s in sensors}
        self._stop = threading.Event()
        self._client, address, props = make_client(url, client_id="patrolnet-demo-sensors")
        self._address, self._props = address, props
        self._thread = threading.Thread(target=self._run, name="sensor-simulator", daemon=True)

    def start(self) -> None:
        connect(self._client, self._address, self._props)
        for sensor in self.sensors:
            online = "Online" if sensor.adapter == "tasmota" else "online"
            self._client.publish(ADAPTERS[sensor.adapter].availability_topic(sensor.topic), online, qos=1, retain=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()

    def _state(self, sensor: SensorConfig, alarm: bool) -> bytes:
        self._battery[sensor.id] = max(5.0, self._battery[sensor.id] - self._rng.uniform(0, 0.5))
        # A room's temperature wanders slowly; a jumpy one would set off the rate-of-rise rule.
        self._temperature[sensor.id] = min(26.0, max(18.0, self._temperature[sensor.id] + self._rng.gauss(0, 0.1)))
        temperature = round(self._temperature[sensor.id], 1)
        return json.dumps(sensor_payload(sensor, alarm, round(self._battery[sensor.id]), temperature)).encode()

    def _run(self) -> None:
        alarm: SensorConfig | None = None
        elapsed = 0.0
        while not self._stop.wait(self.period_s):
            elapsed += self.period_s
            if alarm is None and self.sensors and elapsed >= self.alarm_every_s:
                alarm, elapsed = self._rng.choice(self.sensors), 0.0
                log.info("simulated alarm at %s", alarm.id)
            elif alarm is not None and elapsed >= 20.0:
                log.info("simulated alarm at %s clears", alarm.id)
                alarm = None
            for sensor in self.sensors:
                in_alarm = alarm is not None and alarm.id == sensor.id
                self._client.publish(sensor.topic, self._state(sensor, in_alarm), qos=1)
            if self.sensors and self._rng.random() < 0.05:
                self._client.publish(self.sensors[0].topic, b"{garbled", qos=1)
