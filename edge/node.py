"""The edge node runtime: local sensors in, spooled messages to the uplink out.

    sensor --MQTT--> adapter --Reading--> SensorRules --Event--> AlarmVerification --> AlertPolicy --Alert-->
        Uplink (spool, QoS 1) on patrolnet/v1/<site>/{readings,events,alerts,deadletters,heartbeats}
    camera --RTSP--> VideoPipeline --Event--> (the same verification, policy and uplink)

A camera that sees smoke or flame confirms a detector's alarm like a second
detector would, and a fire alarm of a sensor linked to cameras carries one
picture of what those cameras see at that moment.

The node listens to each configured adapter's wildcard topics, so a device
that nobody configured shows up as a dead letter ("unknown device") instead
of being missed. A payload the node cannot read, or a field of it, becomes a
DeadLetter sent upstream with the topic, the raw bytes and the reason; the
node goes on with the next message. A timer checks which sensors have gone
silent, and every ``uplink.heartbeat_s`` it sends a Heartbeat with each
sensor's health and the node's counters.

Readings wait up to ``FLUSH_S`` to go upstream together, one spooled message
for many: the spool syncs every message to disk, and one sync per reading
message holds a node to about a thousand messages a second. Events, alerts,
and the readings of a message that raised an event are spooled at once; a
node that crashes loses at most ``FLUSH_S`` of ordinary readings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import paho.mqtt.client as mqtt
from pydantic import TypeAdapter

from alerts.models import DeadLetter, DeviceStatus, Event, EventKind, EventState, Heartbeat, Reading, utc_now
from alerts.policy import AlertPolicy
from detectors.sensor_rules import SensorRules
from detectors.verification import AlarmVerification
from edge.config import NodeConfig
from edge.outbox import Spool, Uplink
from edge.video import VideoPipeline
from ingest.adapters import ADAPTERS, Route, SensorRoutes
from ingest.downsample import Downsampler
from ingest.mqtt import connect, make_client, uplink_topic
from ingest.sensors import Decoded, PayloadError, parse_availability

log = logging.getLogger(__name__)

READINGS = TypeAdapter(list[Reading])
FLUSH_S = 0.25
FLUSH_READINGS = 500
UNKNOWN_DEVICE_EVERY_S = 3600.0
"""A zigbee light bulb on the sensors' network reports every few seconds: one dead letter an hour per topic
says it is there without filling the table; every message is still counted."""


class EdgeNode:
    """Runs one node config until stopped. ``counts`` tells what it has done."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.counts: Counter[str] = Counter()
        self.started_at = utc_now()
        self.routes = SensorRoutes((s.id, s.adapter, s.topic) for s in config.sensors)
        self._places = {s.id: config.site.place(s.id) for s in config.sensors}
        self.rules = SensorRules(source=config.node_id)
        for sensor in config.sensors:
            self.rules.watch(self._places[sensor.id], sensor, sensor.name, since=self.started_at)
        self.verification = AlarmVerification(config.verification.window_s)
        self.policy = AlertPolicy()
        self.downsampler = Downsampler({s.id: s.downsample for s in config.sensors})
        self._linked = {s.id: s.cameras for s in config.sensors if s.cameras}
        self.video = (
            VideoPipeline(
                config.cameras,
                config.detector,
                config.site.place(),
                config.node_id,
                config.site.timezone,
                self.raise_event,
            )
            if config.cameras
            else None
        )
        self.uplink = Uplink(
            Spool(config.uplink.spool),
            config.uplink_url(),
            client_id=f"patrolnet-edge-{config.node_id}-uplink",
            max_inflight=config.uplink.max_inflight,
        )
        # The MQTT thread and the timer both move rules, policy and counts on.
        self._lock = threading.Lock()
        self._next_heartbeat = self.started_at + timedelta(seconds=config.uplink.heartbeat_s)
        self._unknown_letters: dict[str, float] = {}
        self._readings: list[Reading] = []
        self._readings_since = 0.0
        self._stopping = threading.Event()
        self._timer = threading.Thread(target=self._run_timer, name="edge-timer", daemon=True)
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
        self._timer.start()
        if self.video:
            self.video.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once subscribed to every sensor topic."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        if self.video:
            self.video.stop()
        self._stopping.set()
        self._timer.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._flush_readings()
        self.uplink.stop()

    def tick(self, now: datetime) -> None:
        """Sends readings that waited long enough, raises trouble for sensors silent past their heartbeat,
        and sends the node's heartbeat when due."""
        with self._lock:
            if self._readings and time.monotonic() - self._readings_since >= FLUSH_S:
                self._flush_readings()
            self._raise(self.rules.check_silence(now))
            if now < self._next_heartbeat:
                return
            self._next_heartbeat = now + timedelta(seconds=self.config.uplink.heartbeat_s)
            self._send("heartbeats", self.heartbeat(now).model_dump_json().encode())

    def heartbeat(self, now: datetime) -> Heartbeat:
        devices = []
        for sensor in self.config.sensors:
            state = self.rules.state(sensor.id)
            if state is None:
                continue
            detail = {k: state.values[k] for k in ("battery", "linkquality") if k in state.values}
            devices.append(
                DeviceStatus(
                    device=sensor.id,
                    type=sensor.adapter,
                    online=state.online,
                    last_seen=state.last_seen,
                    detail={**detail, "conditions": sorted(state.on)},
                )
            )
        if self.video:
            devices += [
                DeviceStatus(device=cid, type="camera", online=bool(stats["online"]), detail=stats)
                for cid, stats in self.video.stats().items()
            ]
        return Heartbeat(
            ts=now,
            node_id=self.config.node_id,
            place=self.config.site.place(),
            started_at=self.started_at,
            devices=devices,
            counters={
                **self.counts,
                "spool_pending": self.uplink.spool.pending(),
                "uplink_acked": self.uplink.acked,
                **(self.video.detector_counters() if self.video else {}),
            },
        )

    def _run_timer(self) -> None:
        while not self._stopping.wait(FLUSH_S):
            self.tick(utc_now())

    def _send(self, channel: str, payload: bytes) -> None:
        self.uplink.send(uplink_topic(self.config.site.id, channel), payload)

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("local broker refused the connection: %s", reason_code)
            return
        filters = self.routes.subscriptions()
        if filters:
            client.subscribe([(f, 1) for f in filters])
        else:
            self._subscribed.set()

    def _on_subscribe(self, client: mqtt.Client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.error("the local broker refused sensor subscriptions: %s", ", ".join(refused))
            return
        log.info("node %s listening to %d sensors", self.config.node_id, len(self.config.sensors))
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.counts["messages"] += 1
            route = self.routes.route(message.topic)
            if route is None:
                self._unrouted(message)
                return
            now = utc_now()
            try:
                decoded = self._decode(route, message.payload, now)
            except PayloadError as exc:
                self._dead_letter(message, str(exc))
                return
            if decoded.problems:
                self._dead_letter(message, "; ".join(decoded.problems))
            if decoded.online is not None:
                events = self.rules.availability(route.device, decoded.online, now)
            else:
                events = self.rules.seen(route.device, now) + self.rules.apply(decoded.readings)
            readings = self.downsampler.filter(decoded.readings, keep_all=bool(events))
            self.counts["readings_dropped"] += len(decoded.readings) - len(readings)
            if readings and not self._readings:
                self._readings_since = time.monotonic()
            self._readings += readings
            # The alert first: every spooled message costs a disk sync before it can leave.
            self._raise(events)
            if events or len(self._readings) >= FLUSH_READINGS:
                self._flush_readings()

    def _flush_readings(self) -> None:
        if self._readings:
            self._send("readings", READINGS.dump_json(self._readings))
            self.counts["readings"] += len(self._readings)
            self._readings = []

    def _decode(self, route: Route, payload: bytes, now: datetime) -> Decoded:
        if route.availability:
            return parse_availability(payload)
        return ADAPTERS[route.adapter].parse(payload, self._places[route.device], now)

    def raise_event(self, event: Event) -> None:
        """Sends an event of another part of the node (the cameras) through verification and the policy."""
        with self._lock:
            self._raise([event])

    def _with_camera_picture(self, event: Event) -> Event:
        cameras = self._linked.get(event.place.device or "")
        if not cameras or not self.video or event.kind is not EventKind.FIRE or event.state is not EventState.START:
            return event
        picture = self.video.snapshot(cameras)
        return event.model_copy(update={"snapshot": picture}) if picture else event

    def _raise(self, events: list[Event]) -> None:
        for raw in events:
            for event in self.verification.apply(self._with_camera_picture(raw)):
                self._send("events", event.model_dump_json().encode())
                self.counts["events"] += 1
                alert = self.policy.apply(event)
                if alert is not None:
                    self._send("alerts", alert.model_dump_json().encode())
                    self.counts["alerts"] += 1

    def _unrouted(self, message: mqtt.MQTTMessage) -> None:
        if not self.routes.is_unknown_device(message.topic):
            self.counts["ignored"] += 1
            return
        self.counts["unknown_device"] += 1
        last = self._unknown_letters.get(message.topic)
        if last is None or time.monotonic() - last >= UNKNOWN_DEVICE_EVERY_S:
            self._unknown_letters[message.topic] = time.monotonic()
            self._dead_letter(message, "unknown device")

    def _dead_letter(self, message: mqtt.MQTTMessage, reason: str) -> None:
        log.warning("dead letter from %s: %s", message.topic, reason)
        self.counts["dead_letters"] += 1
        letter = DeadLetter(topic=message.topic, payload=message.payload, reason=reason, source=self.config.node_id)
        self._send("deadletters", letter.model_dump_json().encode())
