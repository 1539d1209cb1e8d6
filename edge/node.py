"""The edge node runtime: local sensors in, spooled messages to the uplink out.

    sensor --MQTT--> adapter --Reading--> SensorRules --Batch--> EventSink: AlarmVerification --> AlertPolicy
        --> Uplink (spool, QoS 1) on patrolnet/v1/<site>/{readings,events,alerts,deadletters,heartbeats,status}
    camera --RTSP--> VideoPipeline --Event--> (the same sink)

A camera that sees smoke or flame confirms a detector's alarm like a second
detector would, and a fire alarm of a sensor linked to cameras carries one
picture of what those cameras see at that moment.

The node listens to each configured adapter's wildcard topics, so a device
that nobody configured shows up as a dead letter ("unknown device") instead
of being missed. A payload the node cannot read, or a field of it, or one
that makes any part of the node raise, becomes a DeadLetter sent upstream
with the topic, the raw bytes and the reason; the node goes on with the next
message. A timer checks which sensors have gone silent, and every
``uplink.heartbeat_s`` it sends a Heartbeat with each sensor's health, each
worker's state and restarts, and the node's counters.

Nothing on the MQTT thread, the timer or the cameras waits on disk: what
they produce goes to the event sink (``edge.sink``), the one thread that
syncs SQLite and encodes pictures. The sensor subscription is a persistent
MQTT v5 session (QoS 1, a stable client id, ``broker.session_expiry_s``), and
each sensor message is acknowledged only once the sink has stored what it
raised: messages sent while the node is down, or in flight when it was
killed, are delivered when it is back. Retained device states arrive at
every subscription and rebuild what the sensors say now; what the policy,
verification and rules knew is restored from the node's SQLite
(``edge.state``), so an alarm still on after a restart updates its alert and
one that cleared meanwhile ends at the detector's next message.

A supervisor (``edge.supervisor``) watches every worker and restarts one
that died; when it cannot recover it sets ``failed`` (and ``failure``, the
reason), and ``patrolnet edge run`` stops the node and exits non-zero. The uplink's last will says the
node is offline (retained, on the ``status`` channel); it says online at
every connect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt

from alerts.core.models import DeadLetter, DeviceStatus, Event, EventKind, EventState, Heartbeat, NodeStatus, utc_now
from alerts.core.mqtt import make_client
from alerts.core.policy import AlertPolicy
from alerts.core.protocol import confirm_topic, encode, uplink_topic
from detectors.sensor_rules import SensorRules
from detectors.verification import AlarmVerification
from edge.config import NodeConfig
from edge.outbox import Spool, Uplink
from edge.sink import Batch, EventSink, Outgoing
from edge.state import EdgeState
from edge.supervisor import Liveness, Supervisor
from edge.video import VideoPipeline
from ingest.adapters import ADAPTERS, Route, SensorRoutes
from ingest.downsample import Downsampler
from ingest.sensors import Decoded, PayloadError, parse_availability

log = logging.getLogger(__name__)

TICK_S = 0.25
UNKNOWN_DEVICE_EVERY_S = 3600.0
"""A zigbee light bulb on the sensors' network reports every few seconds: one dead letter an hour per topic
says it is there without filling the table; every message is still counted."""
FRAME_LETTER_EVERY_S = 60.0
"""A camera whose every frame fails would send 25 dead letters a second: one a minute says it, all are counted."""
REASON_CHARS = 500


class EdgeNode:
    """Runs one node config until stopped. ``counts`` tells what it has done; ``failure`` why it gave up."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._counts: Counter[str] = Counter()
        self.started_at = utc_now()
        site = config.site.place()
        self.routes = SensorRoutes((s.id, s.adapter, s.topic) for s in config.sensors)
        self._places = {s.id: config.site.place(s.id) for s in config.sensors}
        self._max_bytes = {s.id: s.max_payload_bytes for s in config.sensors}
        self.rules = SensorRules(source=config.node_id)
        for sensor in config.sensors:
            self.rules.watch(self._places[sensor.id], sensor, sensor.name, since=self.started_at)
        self.verification = AlarmVerification(config.verification.window_s)
        self.policy = AlertPolicy()
        spool = Spool(config.uplink.spool)
        self.state = EdgeState(spool)
        self.rules.restore(self.state.load("sensors"))
        self.verification.restore(self.state.load("verification"))
        self.policy.restore(self.state.load("policy"))
        self.downsampler = Downsampler({s.id: s.downsample for s in config.sensors})
        self._linked = {s.id: s.cameras for s in config.sensors if s.cameras}
        self.uplink = Uplink(
            spool,
            config.uplink_url(),
            client_id=f"patrolnet-edge-{config.node_id}-uplink",
            max_inflight=config.uplink.max_inflight,
            status_topic=uplink_topic(config.site.id, "status"),
            online=encode("status", NodeStatus(node_id=config.node_id, place=site, online=True)),
            offline=encode("status", NodeStatus(node_id=config.node_id, place=site, online=False)),
            confirm_topic=confirm_topic(config.site.id, config.node_id),
        )
        self.sink = EventSink(
            self.verification,
            self.policy,
            self.state,
            self._send,
            self._with_camera_picture,
            config.node_id,
            max_unacked=config.broker.max_inflight // 2,
        )
        self.video = (
            VideoPipeline(
                config.cameras,
                config.detector,
                site,
                config.node_id,
                config.site.timezone,
                self.raise_event,
                self._frame_letter,
            )
            if config.cameras
            else None
        )
        # Rules and downsampler are moved on by the MQTT thread and the timer; in memory only, never on disk.
        self._lock = threading.Lock()
        self._next_heartbeat = self.started_at + timedelta(seconds=config.uplink.heartbeat_s)
        self._letters: dict[str, float] = {}
        self._stopping = threading.Event()
        self.failed = threading.Event()
        """Set when the supervisor gives up; ``failure`` says why."""
        self.sensor_liveness = Liveness()
        self.timer_liveness = Liveness()
        self._timer = self._timer_thread()
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
        self._subscribed = threading.Event()
        supervision = config.supervision
        self.supervisor = Supervisor(
            config.node_id,
            site,
            emit=self._trouble,
            on_fatal=self._give_up,
            max_restarts=supervision.max_restarts,
            window_s=supervision.window_s,
        )
        self._watch_workers()

    @property
    def counts(self) -> Counter[str]:
        # Copied first: dict() of a Counter is one step for the interpreter, so a thread adding a key cannot break it.
        return Counter(dict(self._counts)) + Counter(dict(self.sink.counts))

    @property
    def failure(self) -> str | None:
        """Why the node gave up (a worker it could not recover), or None."""
        return self.supervisor.failure

    def start(self) -> None:
        self.uplink.start()
        self.sink.start()
        self._connect()
        self._listener.start()
        self._timer.start()
        if self.video:
            self.video.start()
        self.supervisor.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once subscribed to every sensor topic."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self.supervisor.stop()
        if self.video:
            self.video.stop()
        self._stopping.set()
        self._timer.join(timeout=5)
        self._client.disconnect()
        self._listener.join(timeout=5)
        self.sink.stop()
        self.uplink.stop()
        self.uplink.spool.close()

    def _watch_workers(self) -> None:
        stuck = self.config.supervision.stuck_after_s
        watch = self.supervisor.watch
        watch("sensors", self._listener_alive, self._restart_listener, self.sensor_liveness, stuck)
        watch("timer", lambda: self._timer.is_alive(), self._restart_timer, self.timer_liveness, stuck)
        watch("sink", self.sink.alive, self.sink.restart, self.sink.liveness, stuck)
        watch("uplink", self.uplink.alive, None, None, stuck)
        if self.video:
            self.video.watch(self.supervisor, stuck)

    def _give_up(self, reason: str) -> None:
        self.failed.set()

    def _trouble(self, events: list[Event]) -> None:
        # Never blocks the supervisor: when the sink itself is stuck, giving up is the remedy, not waiting.
        self.sink.put(Batch(events=events), block=False)

    # The sensor subscriber.

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
        """Never raises: paho's thread would die with it, and the node would hear no sensor again."""
        with self.sensor_liveness.working():
            try:
                self._handle(message)
            except Exception as exc:
                log.exception("sensor message on %s failed", message.topic)
                self._dead_letter(message, f"{type(exc).__name__}: {exc}"[:REASON_CHARS])

    def _handle(self, message: mqtt.MQTTMessage) -> None:
        self._counts["messages"] += 1
        route = self.routes.route(message.topic)
        if route is None:
            self._unrouted(message)
            return
        now = utc_now()
        try:
            decoded = self._decode(route, bytes(message.payload), now)
        except PayloadError as exc:
            self._dead_letter(message, str(exc))
            return
        if decoded.problems:
            self._dead_letter(message, "; ".join(decoded.problems), ack=False)
        with self._lock:
            if decoded.online is not None:
                events = self.rules.availability(route.device, decoded.online, now)
            else:
                events = self.rules.seen(route.device, now) + self.rules.apply(decoded.readings)
            readings = self.downsampler.filter(decoded.readings, keep_all=bool(events))
            sensors = {route.device: self.rules.export(route.device)} if events else {}
        self._counts["readings_dropped"] += len(decoded.readings) - len(readings)
        self.sink.put(Batch(events=events, readings=readings, sensors=sensors, ack=self._ack(message)))

    def _ack(self, message: mqtt.MQTTMessage) -> Callable[[], None]:
        def ack() -> None:
            self._client.ack(message.mid, message.qos)

        return ack

    def _decode(self, route: Route, payload: bytes, now: datetime) -> Decoded:
        cap = self._max_bytes[route.device]
        if len(payload) > cap:
            raise PayloadError(f"payload of {len(payload)} bytes is over the cap of {cap}")
        if route.availability:
            return parse_availability(payload)
        return ADAPTERS[route.adapter].parse(payload, self._places[route.device], now)

    def _unrouted(self, message: mqtt.MQTTMessage) -> None:
        if not self.routes.is_unknown_device(message.topic):
            self._counts["ignored"] += 1
            self.sink.put(Batch(ack=self._ack(message)))
            return
        self._counts["unknown_device"] += 1
        if self._due(message.topic, UNKNOWN_DEVICE_EVERY_S):
            self._dead_letter(message, "unknown device")
        else:
            self.sink.put(Batch(ack=self._ack(message)))

    def _due(self, topic: str, every_s: float) -> bool:
        """Whether a rate-limited dead letter of ``topic`` may go now."""
        last = self._letters.get(topic)
        if last is not None and time.monotonic() - last < every_s:
            return False
        self._letters[topic] = time.monotonic()
        return True

    def _dead_letter(self, message: mqtt.MQTTMessage, reason: str, ack: bool = True) -> None:
        self._letter(message.topic, bytes(message.payload), reason, self._ack(message) if ack else None)

    def _letter(
        self, topic: str, payload: bytes, reason: str, ack: Callable[[], None] | None = None, block: bool = True
    ) -> None:
        log.warning("dead letter from %s: %s", topic, reason)
        self._counts["dead_letters"] += 1
        letter = DeadLetter(topic=topic, payload=payload, reason=reason, source=self.config.node_id)
        self.sink.put(Outgoing("deadletters", lambda: encode("deadletters", letter), ack), block=block)

    def _frame_letter(self, topic: str, reason: str) -> None:
        self._counts["frame_errors"] += 1
        if self._due(topic, FRAME_LETTER_EVERY_S):
            self._letter(topic, b"", reason, block=False)

    # The timer.

    def _timer_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run_timer, name="edge-timer", daemon=True)

    def _restart_timer(self) -> None:
        self._timer = self._timer_thread()
        self._timer.start()

    def _run_timer(self) -> None:
        while not self._stopping.wait(TICK_S):
            with self.timer_liveness.working():
                try:
                    self.tick(utc_now())
                except Exception:
                    log.exception("node timer round failed; going on")
                    self._counts["timer_failed"] += 1

    def tick(self, now: datetime) -> None:
        """Raises trouble for sensors silent past their heartbeat, and sends the node's heartbeat when due."""
        with self._lock:
            events = self.rules.check_silence(now)
            sensors = {e.place.device or "": self.rules.export(e.place.device or "") for e in events}
        if events:
            self.sink.put(Batch(events=events, sensors=sensors))
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + timedelta(seconds=self.config.uplink.heartbeat_s)
        self.sink.put(Outgoing("heartbeats", lambda: encode("heartbeats", self.heartbeat(now))))

    def heartbeat(self, now: datetime) -> Heartbeat:
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
        if self.video:
            devices += [
                DeviceStatus(device=cid, type="camera", online=bool(stats["online"]), detail=stats)
                for cid, stats in self.video.stats().items()
            ]
        unconfirmed, oldest_s = self.uplink.spool.backlog()
        return Heartbeat(
            ts=now,
            node_id=self.config.node_id,
            place=self.config.site.place(),
            started_at=self.started_at,
            devices=devices,
            unconfirmed=unconfirmed,
            oldest_unconfirmed_s=oldest_s,
            counters={
                **self.counts,
                "spool_pending": unconfirmed,
                "spool_evicted": sum(self.uplink.spool.evicted.values()),
                "uplink_acked": self.uplink.acked,
                "uplink_confirmed": self.uplink.confirmed,
                "uplink_resent": self.uplink.resent,
                "uplink_refused": self.uplink.refused,
                "sink_queue": self.sink.pending(),
                **self._worker_counters(),
                **(self.video.detector_counters() if self.video else {}),
            },
        )

    def _worker_counters(self) -> dict[str, float]:
        """Per worker: ``worker_ok.<name>`` (1 or 0) and ``worker_restarts.<name>``; and all restarts."""
        report = self.supervisor.report()
        counters: dict[str, float] = {"worker_restarts": sum(float(w["restarts"]) for w in report.values())}
        for name, worker in report.items():
            counters[f"worker_ok.{name}"] = float(worker["state"] == "ok")
            counters[f"worker_restarts.{name}"] = float(worker["restarts"])
        return counters

    # The event path: every event goes through the sink.

    def _send(self, channel: str, payload: bytes) -> None:
        self.uplink.send(uplink_topic(self.config.site.id, channel), payload)

    def raise_event(self, event: Event) -> None:
        """Sends an event of another part of the node (the cameras) through verification and the policy.

        Never blocks a camera: with the sink's queue full the event is dropped and counted (``sink_dropped``).
        """
        self.sink.put(Batch(events=[event]), block=False)

    def _with_camera_picture(self, event: Event) -> Event:
        cameras = self._linked.get(event.place.device or "")
        if not cameras or not self.video or event.kind is not EventKind.FIRE or event.state is not EventState.START:
            return event
        picture = self.video.snapshot(cameras)
        return event.model_copy(update={"snapshot": picture}) if picture else event
