"""The sensor path of a node, beside the video one (``edge.video``): local MQTT messages in, batches to the sink out.

    local broker --MQTT (QoS 1, manual ack)--> route (topic -> device) --> adapter (bounded parsing) --Reading-->
        SensorRules (alarms, heat, silence) + Downsampler --Batch(events, readings, ack)--> EventSink

It listens to each configured adapter's wildcard topics, so a device that
nobody configured shows up as a dead letter ("unknown device", one an hour
per topic) instead of being missed. A payload it cannot read, or a field of
it, or one that makes any part of it raise, becomes a dead letter
(``edge.letters``) with the topic, the raw bytes and the reason; it goes on
with the next message.

Everything runs on paho's thread, in the message callback: no thread hop
between a detector's alarm and the sink. The sink acknowledges each message
once what it raised is on disk; nothing here waits on disk, except when the
sink's queue is full (the broker then holds the messages behind it). The
subscription is a persistent MQTT v5 session (a stable client id,
``broker.session_expiry_s``): messages sent while the node is down, or in
flight when it was killed, are delivered when it is back. Retained device
states arrive at every subscription and rebuild what the sensors say now;
what the rules knew is restored from the node's SQLite (``edge.state``, part
``sensors``), which the sink writes with the events that changed it. A
message the broker sends again that the node had handled and stored before
(its acknowledgement lost with the connection or the process) is
acknowledged and not handled again (``edge.state.Deliveries``): the rules
restored are already past it.

The rules and the downsampler are moved on by paho's thread and by the
node's timer (``check_silence``, ``devices``), under one lock; in memory only.
Each hands the sink what the rules made in the order the rules made it, so
the sink never saves a sensor's state over a later one.

Example (``handle`` is what paho's callback calls):
    >>> import tempfile, pathlib
    >>> from alerts.core.policy import AlertPolicy
    >>> from detectors.verification import AlarmVerification
    >>> from edge.config import parse_config
    >>> from edge.outbox import Spool
    >>> config = parse_config(f'''
    ... node_id: n1
    ... site: {{id: s1, sub_district: sd, community: c, grid: g}}
    ... uplink: {{spool: {pathlib.Path(tempfile.mkdtemp()) / "outbox.sqlite3"}}}
    ... sensors: [{{id: smoke-1, adapter: zigbee2mqtt, topic: zigbee2mqtt/hall}}]''')
    >>> state = EdgeState(Spool(config.uplink.spool))
    >>> sent, acked = [], []
    >>> sink = EventSink(AlarmVerification(), AlertPolicy(), state, send=lambda channel, payload: sent.append(channel))
    >>> sensors = SensorPipeline(config, sink, DeadLetters(sink, "n1"), state, since=utc_now())
    >>> sink.start()
    >>> sensors.handle("zigbee2mqtt/hall", b'{"smoke": true}', lambda: acked.append("alarm"))
    >>> sensors.handle("zigbee2mqtt/hall", b'{"smoke": ', lambda: acked.append("broken"))
    >>> sink.stop()
    >>> sent, acked, sensors.counts["messages"]
    (['events', 'alerts', 'readings', 'deadletters'], ['alarm', 'broken'], 2)
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt

from alerts.core.models import DeviceStatus, utc_now
from alerts.core.mqtt import make_client
from detectors.sensor_rules import SensorRules
from edge.config import NodeConfig
from edge.letters import DeadLetters
from edge.sink import Ack, Batch, EventSink
from edge.state import Change, Deliveries, EdgeState
from edge.supervisor import Liveness, Supervisor
from ingest.adapters import ADAPTERS, Route, SensorRoutes
from ingest.downsample import Downsampler
from ingest.sensors import Decoded, PayloadError, parse_availability

log = logging.getLogger(__name__)

UNKNOWN_DEVICE_EVERY_S = 3600.0
"""A zigbee light bulb on the sensors' network reports every few seconds: one dead letter an hour per topic
says it is there without filling the table; every message is still counted."""
REASON_CHARS = 500
MQTT_PACKET_IDS = 65_535

Acknowledge = Callable[[], None]


class SensorPipeline:
    """The node's sensors: subscription, routing, parsing, rules and downsampling. ``counts`` tells what it did."""

    def __init__(
        self, config: NodeConfig, sink: EventSink, letters: DeadLetters, state: EdgeState, since: datetime
    ) -> None:
        self.config = config
        self.sink = sink
        self.letters = letters
        self.counts: Counter[str] = Counter()
        self.liveness = Liveness()
        self.routes = SensorRoutes((s.id, s.adapter, s.topic) for s in config.sensors)
        self._places = {s.id: config.site.place(s.id) for s in config.sensors}
        self._max_bytes = {s.id: s.max_payload_bytes for s in config.sensors}
        self.rules = SensorRules(source=config.node_id)
        for sensor in config.sensors:
            self.rules.watch(self._places[sensor.id], sensor, sensor.name, since=since)
        self.rules.restore(state.load("sensors"))
        # Twice the broker's in-flight window (no older delivery can still be unacknowledged), and short of the
        # 65,535 packet ids by that window: an id noted in it cannot be one the broker has handed out again since
        # (a window so wide that the two cannot both hold misses a message sent again rather than drop a new one).
        window = config.broker.max_inflight
        self.deliveries = Deliveries(state, size=max(1, min(2 * window, MQTT_PACKET_IDS - window)))
        self.downsampler = Downsampler({s.id: s.downsample for s in config.sensors})
        self._lock = threading.Lock()
        self._order = threading.Lock()
        """Held from the rules' move to the sink's queue: batches reach the sink in the order the rules made them."""
        self._session = 0
        """Counts the broker sessions this process had: an acknowledgement belongs to the one it came in."""
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._client, self._address, self._props = make_client(
            config.broker_url(),
            client_id=f"patrolnet-edge-{config.node_id}",
            persistent=True,
            manual_ack=True,
            session_expiry_s=config.broker.session_expiry_s,
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._listener = self._listener_thread()

    def start(self) -> None:
        self._connect()
        self._listener.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once subscribed to every sensor topic."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._client.disconnect()
        self._listener.join(timeout=5)

    def watch(self, supervisor: Supervisor, stuck_after_s: float) -> None:
        """Registers the MQTT thread as worker ``sensors``: restarted if it dies; its liveness is the last message."""
        supervisor.watch("sensors", self._listener_alive, self._restart_listener, self.liveness, stuck_after_s)

    # The subscriber: paho's thread.

    def _connect(self) -> None:
        self._client.connect_async(
            self._address.host, self._address.port, keepalive=30, clean_start=False, properties=self._props
        )

    def _listener_thread(self) -> threading.Thread:
        return threading.Thread(target=self._listen, name="edge-sensors", daemon=True)

    def _listen(self) -> None:
        # A first connection that fails ends the thread: the supervisor retries with backoff, and reports it.
        try:
            self._client.loop_forever(retry_first_connection=False)
        except OSError as exc:
            log.error("local broker %s:%s unreachable: %s", self._address.host, self._address.port, exc)

    def _listener_alive(self) -> bool:
        return self._listener.is_alive() or self._stopping.is_set()

    def _restart_listener(self) -> None:
        self._connect()
        self._listener = self._listener_thread()
        self._listener.start()

    def _on_connect(self, client: mqtt.Client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("local broker refused the connection: %s", reason_code)
            return
        log.info("local broker connected; session %s", "resumed" if flags.session_present else "new")
        if not flags.session_present:
            # The broker sends nothing again, and its packet ids start over: what the node noted of the session
            # before is void (saved before any message of this one), and so are the acknowledgements still waiting.
            self._session += 1
            self.sink.put(Batch(changes=[self.deliveries.new_session()]))
        filters = self.routes.subscriptions()
        if filters:
            # Again on a resumed session too: the broker then sends each device's retained state.
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
        payload = bytes(message.payload)
        if message.qos == 0:
            self.handle(message.topic, payload, self._ack(message))
        elif message.dup and self.deliveries.handled(message.mid, message.topic, payload):
            # Stored before, its acknowledgement lost: acknowledged in turn, after what the sink holds before it.
            self.counts["redelivered"] += 1
            log.info("message %d on %s sent again, already handled: acknowledged", message.mid, message.topic)
            self.sink.put(Batch(ack=self._ack(message)))
        else:
            delivery = self.deliveries.note(message.mid, message.topic, payload)
            self.handle(message.topic, payload, self._ack(message, [delivery]))

    def _ack(self, message: mqtt.MQTTMessage, changes: list[Change] | None = None) -> Ack:
        session = self._session

        def ack() -> None:
            # The same packet id names another message in a new session.
            if session == self._session:
                self._client.hold_ack(message.mid, message.qos)

        return Ack(ack, changes or [], flush=self._client.send_acks)

    # The message path.

    def handle(self, topic: str, payload: bytes, ack: Acknowledge) -> None:
        """Hands what one message says to the sink, with ``ack`` to run once it is stored.

        Never raises: paho's thread would die with it, and the node would hear no sensor again.
        """
        with self.liveness.working():
            try:
                self._handle(topic, payload, ack)
            except Exception as exc:
                log.exception("sensor message on %s failed", topic)
                self.letters.send(topic, payload, f"{type(exc).__name__}: {exc}"[:REASON_CHARS], ack)

    def _handle(self, topic: str, payload: bytes, ack: Acknowledge) -> None:
        self.counts["messages"] += 1
        route = self.routes.route(topic)
        if route is None:
            self._unrouted(topic, payload, ack)
            return
        now = utc_now()
        try:
            decoded = self._decode(route, payload, now)
        except PayloadError as exc:
            self.letters.send(topic, payload, str(exc), ack)
            return
        if decoded.problems:
            self.letters.send(topic, payload, "; ".join(decoded.problems))
        with self._order:
            with self._lock:
                if decoded.online is not None:
                    events = self.rules.availability(route.device, decoded.online, now)
                else:
                    events = self.rules.seen(route.device, now) + self.rules.apply(decoded.readings)
                readings = self.downsampler.filter(decoded.readings, keep_all=bool(events))
                changes = self._changes([route.device] if events else [])
            self.counts["readings_dropped"] += len(decoded.readings) - len(readings)
            self.sink.put(Batch(events=events, readings=readings, changes=changes, ack=ack))

    def _decode(self, route: Route, payload: bytes, now: datetime) -> Decoded:
        cap = self._max_bytes[route.device]
        if len(payload) > cap:
            raise PayloadError(f"payload of {len(payload)} bytes is over the cap of {cap}")
        if route.availability:
            return parse_availability(payload)
        return ADAPTERS[route.adapter].parse(payload, self._places[route.device], now)

    def _unrouted(self, topic: str, payload: bytes, ack: Acknowledge) -> None:
        if not self.routes.is_unknown_device(topic):
            self.counts["ignored"] += 1
            self.sink.put(Batch(ack=ack))
            return
        self.counts["unknown_device"] += 1
        if self.letters.due(topic, UNKNOWN_DEVICE_EVERY_S):
            self.letters.send(topic, payload, "unknown device", ack)
        else:
            self.sink.put(Batch(ack=ack))

    # For the node's timer.

    def check_silence(self, now: datetime) -> None:
        """Raises trouble for sensors silent past their heartbeat."""
        with self._order:
            with self._lock:
                events = self.rules.check_silence(now)
                changes = self._changes(list(dict.fromkeys(e.place.device or "" for e in events)))
            if events:
                self.sink.put(Batch(events=events, changes=changes))

    def _changes(self, devices: list[str]) -> list[Change]:
        """The rules' state of ``devices``, to save with the events that changed it. Under self._lock."""
        return [("sensors", device, self.rules.export(device)) for device in devices]

    def devices(self) -> list[DeviceStatus]:
        """Each sensor heard from since the start: online, last seen, battery, link quality, conditions on."""
        devices = []
        with self._lock:
            for sensor in self.config.sensors:
                state = self.rules.state(sensor.id)
                if state is None:
                    continue
                detail: dict[str, Any] = {k: state.values[k] for k in ("battery", "linkquality") if k in state.values}
                devices.append(
                    DeviceStatus(
                        device=sensor.id,
                        type=sensor.adapter,
                        online=state.online,
                        last_seen=state.last_seen,
                        detail={**detail, "conditions": sorted(state.on), "cameras": sensor.cameras},
                    )
                )
        return devices
