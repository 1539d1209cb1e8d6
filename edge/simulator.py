"""Simulated zigbee2mqtt fire sensors, for the demo: a real broker, made-up smoke.

Each sensor reports its state every few seconds; now and then one goes into
alarm for a while and clears, and once in a while a broken payload is sent so
the dead-letter path shows too.
"""

from __future__ import annotations

import json
import logging
import random
import threading

from edge.config import SensorConfig
from ingest.mqtt import connect, make_client

log = logging.getLogger(__name__)


class SensorSimulator:
    def __init__(
        self, url: str, sensors: list[SensorConfig], period_s: float = 5.0, alarm_every_s: float = 45.0
    ) -> None:
        self.sensors = sensors
        self.period_s = period_s
        self.alarm_every_s = alarm_every_s
        self._rng = random.Random(7)
        self._battery = {s.id: 100.0 for s in sensors}
        self._stop = threading.Event()
        self._client, address, props = make_client(url, client_id="patrolnet-demo-sensors")
        self._address, self._props = address, props
        self._thread = threading.Thread(target=self._run, name="sensor-simulator", daemon=True)

    def start(self) -> None:
        connect(self._client, self._address, self._props)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()

    def _state(self, sensor: SensorConfig, smoke: bool) -> bytes:
        self._battery[sensor.id] = max(5.0, self._battery[sensor.id] - self._rng.uniform(0, 0.5))
        battery = round(self._battery[sensor.id])
        return json.dumps(
            {
                "smoke": smoke,
                "battery": battery,
                "battery_low": battery < 20,
                "tamper": False,
                "temperature": round(self._rng.uniform(18, 24) + (30 if smoke else 0), 1),
                "linkquality": self._rng.randint(60, 160),
            }
        ).encode()

    def _run(self) -> None:
        alarm: SensorConfig | None = None
        elapsed = 0.0
        while not self._stop.wait(self.period_s):
            elapsed += self.period_s
            if alarm is None and self.sensors and elapsed >= self.alarm_every_s:
                alarm, elapsed = self._rng.choice(self.sensors), 0.0
                log.info("simulated smoke at %s", alarm.id)
            elif alarm is not None and elapsed >= 20.0:
                log.info("simulated smoke at %s clears", alarm.id)
                alarm = None
            for sensor in self.sensors:
                smoke = alarm is not None and alarm.id == sensor.id
                self._client.publish(sensor.topic, self._state(sensor, smoke), qos=1)
            if self.sensors and self._rng.random() < 0.05:
                self._client.publish(self.sensors[0].topic, b"{garbled", qos=1)
