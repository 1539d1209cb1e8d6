"""The edge node runtime: it wires the sensor and video pipelines to the event sink and the uplink.

    sensor --MQTT--> SensorPipeline (edge.sensors) --Batch--> EventSink (edge.sink): AlarmVerification
        --> AlertPolicy --> Uplink (edge.outbox: spool, QoS 1) on patrolnet/v1/<site>/{readings,events,alerts,...}
    camera --RTSP--> VideoPipeline (edge.video) --Event--> (the same sink)
    the camera's packets --> ClipRecorder (edge.clips): kept; a security alert stored --> MP4 clip --> clip spool
        --> ClipUploader (edge.clip_upload) --HTTP, resumable--> the alert API

A camera that sees smoke or flame confirms a detector's alarm like a second
detector would, and a fire alarm of a sensor linked to cameras carries one
picture of what those cameras see at that moment (taken on the sink's thread).

What a node cannot read goes upstream as a dead letter (``edge.letters``):
a sensor payload, a camera frame that failed. A timer checks which sensors
have gone silent, and every ``uplink.heartbeat_s`` it sends a Heartbeat with
each device's health, each worker's state and restarts, and the node's
counters.

Nothing on the MQTT thread, the timer or the cameras waits on disk: what
they produce goes to the event sink, the one thread that syncs SQLite and
encodes pictures. Each sensor message is acknowledged only once the sink has
stored what it raised (``edge.sensors`` says how the subscription survives a
restart). What the policy and verification knew is restored from the node's
SQLite (``edge.state``), so an alarm still on after a restart updates its
alert and one that cleared meanwhile ends at the detector's next message.

The centre may ask for a camera's picture now (a snapshot command on the node's commands topic): the answer
goes up through the sink and the spool (``edge.snapshots``).

A supervisor (``edge.supervisor``) watches every worker and restarts one
that died; when it cannot recover it sets ``failed`` (and ``failure``, the
reason), and ``patrolnet edge run`` stops the node and exits non-zero. The uplink's last will says the
node is offline (retained, on the ``status`` channel); it says online at
every connect.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta

from alerts.core.models import Alert, DeviceStatus, Event, EventKind, EventState, Heartbeat, NodeStatus, utc_now
from alerts.core.policy import AlertPolicy
from alerts.core.protocol import confirm_topic, encode, snapshot_topic, uplink_topic
from detectors.verification import AlarmVerification
from edge.clip_upload import NodeClips
from edge.config import NodeConfig
from edge.letters import DeadLetters
from edge.outbox import Spool, Uplink
from edge.sensors import SensorPipeline
from edge.sink import Batch, EventSink, Outgoing
from edge.snapshots import SnapshotAnswers
from edge.state import EdgeState
from edge.supervisor import Liveness, Supervisor
from edge.video import VideoPipeline

log = logging.getLogger(__name__)

TICK_S = 0.25
FRAME_LETTER_EVERY_S = 60.0
"""A camera whose every frame fails would send 25 dead letters a second: one a minute says it, all are counted."""


class EdgeNode:
    """Runs one node config until stopped. ``counts`` tells what it has done; ``failure`` why it gave up."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._counts: Counter[str] = Counter()
        self.started_at = utc_now()
        site = config.site.place()
        spool = Spool(config.uplink.spool)
        self.state = EdgeState(spool)
        self.verification = AlarmVerification(config.verification.window_s)
        self.verification.restore(self.state.load("verification"))
        self.policy = AlertPolicy()
        self.policy.restore(self.state.load("policy"))
        self.uplink = Uplink(
            spool,
            config.uplink_url(),
            client_id=f"patrolnet-edge-{config.node_id}-uplink",
            max_inflight=config.uplink.max_inflight,
            status_topic=uplink_topic(config.site.id, "status"),
            online=encode("status", NodeStatus(node_id=config.node_id, place=site, online=True)),
            offline=encode("status", NodeStatus(node_id=config.node_id, place=site, online=False)),
            confirm_topic=confirm_topic(config.site.id, config.node_id),
            commands={snapshot_topic(config.site.id, config.node_id): self._snapshot_command},
        )
        self.sink = EventSink(
            self.verification,
            self.policy,
            self.state,
            self._send,
            self._with_camera_picture,
            config.node_id,
            max_unacked=config.broker.max_inflight // 2,
            stored=self._clip,
        )
        cameras = [c.id for c in config.cameras]
        self.clips = NodeClips(config.clips, cameras) if config.clips and cameras else None
        self.letters = DeadLetters(self.sink, config.node_id)
        self.sensors = SensorPipeline(config, self.sink, self.letters, self.state, since=self.started_at)
        self._linked = {s.id: s.cameras for s in config.sensors if s.cameras}
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
        if self.video and self.clips:
            for cid, recorder in self.clips.recorders.items():
                self.video.cameras[cid].source.attach(recorder)
        latest = self.video.latest if self.video else None
        self.snapshots = SnapshotAnswers(config.node_id, site, latest, self.sink, self.letters)
        self._next_heartbeat = self.started_at + timedelta(seconds=config.uplink.heartbeat_s)
        self._stopping = threading.Event()
        self.failed = threading.Event()
        """Set when the supervisor gives up; ``failure`` says why."""
        self.timer_liveness = Liveness()
        self._timer = self._timer_thread()
        self.supervisor = Supervisor(
            config.node_id,
            site,
            emit=self._trouble,
            on_fatal=self._give_up,
            max_restarts=config.supervision.max_restarts,
            window_s=config.supervision.window_s,
        )
        self._watch_workers()

    @property
    def counts(self) -> Counter[str]:
        # Copied first: dict() of a Counter is one step for the interpreter, so a thread adding a key cannot break it.
        parts = (self._counts, self.sensors.counts, self.letters.counts, self.sink.counts, self.snapshots.counts)
        return sum((Counter(dict(part)) for part in parts), Counter())

    @property
    def failure(self) -> str | None:
        """Why the node gave up (a worker it could not recover), or None."""
        return self.supervisor.failure

    def start(self) -> None:
        self.uplink.start()
        self.sink.start()
        self.sensors.start()
        self._timer.start()
        if self.video:
            self.video.start()
        if self.clips:
            self.clips.start()
        self.supervisor.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once subscribed to every sensor topic."""
        return self.sensors.wait_ready(timeout)

    def stop(self) -> None:
        self.supervisor.stop()
        if self.video:
            self.video.stop()
        if self.clips:
            self.clips.stop()
        self._stopping.set()
        self._timer.join(timeout=5)
        self.sensors.stop()
        self.sink.stop()
        self.uplink.stop()
        self.uplink.spool.close()

    def _watch_workers(self) -> None:
        stuck = self.config.supervision.stuck_after_s
        watch = self.supervisor.watch
        self.sensors.watch(self.supervisor, stuck)
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

    def _frame_letter(self, topic: str, reason: str) -> None:
        self._counts["frame_errors"] += 1
        if self.letters.due(topic, FRAME_LETTER_EVERY_S):
            self.letters.send(topic, b"", reason, block=False)

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
        self.sensors.check_silence(now)
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + timedelta(seconds=self.config.uplink.heartbeat_s)
        self.sink.put(Outgoing("heartbeats", lambda: encode("heartbeats", self.heartbeat(now))))

    def heartbeat(self, now: datetime) -> Heartbeat:
        devices = self.sensors.devices()
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
                "uplink_rejected": self.uplink.rejected,
                "uplink_dropped": self.uplink.dropped,
                "sink_queue": self.sink.pending(),
                **self._worker_counters(),
                **(self.video.detector_counters() if self.video else {}),
                **(self.clips.counters() if self.clips else {}),
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

    def _snapshot_command(self, topic: str, payload: bytes) -> None:
        self.snapshots.handle(topic, payload)

    def _clip(self, alert: Alert) -> None:
        if self.clips:
            self.clips.mark(alert)

    def _with_camera_picture(self, event: Event) -> Event:
        cameras = self._linked.get(event.place.device or "")
        if not cameras or not self.video or event.kind is not EventKind.FIRE or event.state is not EventState.START:
            return event
        picture = self.video.snapshot(cameras)
        return event.model_copy(update={"snapshot": picture}) if picture else event
