"""The edge node runtime: local sensors in, spooled messages to the uplink out.

    sensor --MQTT--> adapter --Reading--> SensorRules --Event--> AlertPolicy --Alert-->
        Uplink (spool, QoS 1) on patrolnet/v1/<site>/{readings,events,alerts,deadletters}

A payload the node cannot read becomes a DeadLetter sent upstream with the
topic, the raw bytes and the reason; the node goes on with the next message.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import paho.mqtt.client as mqtt
from pydantic import TypeAdapter

from alerts.models import DeadLetter, Reading
from alerts.policy import AlertPolicy
from detectors.sensor_rules import SensorRules
from edge.config import NodeConfig, SensorConfig
from edge.outbox import Spool, Uplink
from ingest.adapters import ADAPTERS, PayloadError
from ingest.mqtt import connect, make_client, uplink_topic

log = logging.getLogger(__name__)

READINGS = TypeAdapter(list[Reading])


class EdgeNode:
    """Runs one node config until stopped. ``counts`` tells what it has done."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self._sensors: dict[str, SensorConfig] = {s.topic: s for s in config.sensors}
        self.rules = SensorRules(source=config.node_id, names={s.id: s.name for s in config.sensors})
        self.policy = AlertPolicy()
        self.uplink = Uplink(
            Spool(config.uplink.spool),
            config.uplink_url(),
            client_id=f"patrolnet-edge-{config.node_id}-uplink",
            max_inflight=config.uplink.max_inflight,
        )
        self._client, self._address, self._props = make_client(
            config.broker_url(), client_id=f"patrolnet-edge-{config.node_id}"
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subscribed = threading.Event()

    def start(self) -> None:
        self.uplink.start()
        connect(self._client, self._address, self._props)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once subscribed to every sensor topic."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self.uplink.stop()

    def _send(self, channel: str, payload: bytes) -> None:
        self.uplink.send(uplink_topic(self.config.site.id, channel), payload)

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("local broker refused the connection: %s", reason_code)
            return
        if self._sensors:
            client.subscribe([(topic, 1) for topic in self._sensors])
        else:
            self._subscribed.set()

    def _on_subscribe(self, client: mqtt.Client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("the local broker refused sensor subscriptions: %s", ", ".join(refused))
            return
        log.info("node %s listening to %d sensors", self.config.node_id, len(self._sensors))
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        sensor = self._sensors.get(message.topic)
        if sensor is None:
            return
        self.counts["messages"] += 1
        try:
            readings = ADAPTERS[sensor.adapter](message.payload, self.config.site.place(sensor.id))
        except PayloadError as exc:
            self._dead_letter(message, str(exc))
            return
        if readings:
            self._send("readings", READINGS.dump_json(readings))
            self.counts["readings"] += len(readings)
        for event in self.rules.apply(readings):
            self._send("events", event.model_dump_json().encode())
            self.counts["events"] += 1
            alert = self.policy.apply(event)
            if alert is not None:
                self._send("alerts", alert.model_dump_json().encode())
                self.counts["alerts"] += 1

    def _dead_letter(self, message: mqtt.MQTTMessage, reason: str) -> None:
        log.warning("dead letter from %s: %s", message.topic, reason)
        self.counts["dead_letters"] += 1
        letter = DeadLetter(topic=message.topic, payload=message.payload, reason=reason, source=self.config.node_id)
        self._send("deadletters", letter.model_dump_json().encode())
