"""A whole edge node with a camera and a linked smoke detector, on a real broker and a real RTSP camera."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from conftest import eventually, mqtt_client
from fire_helpers import ALARM, publish

from alerts.core.models import Event, EventKind, EventState, Heartbeat
from deploy.local.services import Service
from edge.config import parse_config
from edge.node import EdgeNode

NODE = """
node_id: test-node
site: {{id: willow-court, sub_district: riverside, community: east-gate, grid: g07}}
broker: {{url: "{broker}"}}
uplink: {{spool: "{spool}", heartbeat_s: 1}}
cameras:
  - id: cam-walkway
    name: Walkway
    capture: {{url: "{camera}"}}
    scene:
      zones: [{{name: walkway, polygon: [[0, 0.33], [1, 0.40], [1, 0.85], [0, 0.45]]}}]
      rules: [{{type: intrusion, zone: walkway}}]
sensors:
  - {{id: smoke-b3-stair, adapter: zigbee2mqtt, topic: zigbee2mqtt/b3-stair-smoke, cameras: [cam-walkway]}}
"""


@pytest.fixture
def uplink(broker: Service) -> Iterator[queue.Queue[tuple[str, dict]]]:
    """Everything the node sends upstream, as (channel, JSON)."""
    received: queue.Queue[tuple[str, dict]] = queue.Queue()

    def on_message(client: mqtt.Client, userdata, message: mqtt.MQTTMessage) -> None:
        received.put((message.topic.rsplit("/", 1)[1], json.loads(message.payload)))

    with mqtt_client(broker, "test-centre", "patrolnet/v1/#", on_message):
        yield received


def next_on(received: queue.Queue[tuple[str, dict]], channel: str, match=lambda body: True) -> dict:
    while True:
        got, body = received.get(timeout=30)
        if got == channel and match(body):
            return body


def test_the_node_watches_the_camera_and_puts_its_picture_on_the_fire_alarm(
    broker: Service, rtsp_camera: Service, uplink, tmp_path: Path
) -> None:
    config = parse_config(NODE.format(broker=broker.url, spool=tmp_path / "outbox.sqlite3", camera=rtsp_camera.url))
    node = EdgeNode(config)
    node.start()
    try:
        assert node.wait_ready()
        intrusion = next_on(uplink, "alerts", lambda a: a["type"] == "intrusion")
        assert intrusion["route"] == "police" and intrusion["place"]["device"] == "cam-walkway"

        heartbeat = Heartbeat.model_validate(next_on(uplink, "heartbeats", lambda h: len(h["devices"]) == 2))
        camera = next(d for d in heartbeat.devices if d.device == "cam-walkway")
        assert camera.type == "camera" and camera.online and camera.detail["frames_read"] > 0
        assert heartbeat.counters["detector_batches"] > 0 and heartbeat.counters["uplink_acked"] > 0

        with mqtt_client(broker, "test-zigbee2mqtt") as sensor:
            publish(sensor, ALARM)
        fire = Event.model_validate(next_on(uplink, "events", lambda e: e["type"] == "smoke"))
        assert fire.snapshot is not None, "a sensor alarm carries its linked camera's picture"
        picture = cv2.imdecode(np.frombuffer(fire.snapshot, np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None, "the snapshot is a picture"
        assert picture.shape == (360, 480, 3), "the walkway camera's frame, scaled to the mosaic's height"
        assert fire.confirmed is False

        # A camera that sees smoke on the same site confirms the detector's alarm.
        node.raise_event(
            Event(
                kind=EventKind.FIRE,
                type="visual_smoke",
                state=EventState.START,
                place=fire.place.with_device("cam-walkway"),
                source="test-node",
                title="Camera sees smoke",
            )
        )
        confirmed = next_on(uplink, "alerts", lambda a: a["type"] == "smoke" and a["confirmed"])
        assert confirmed["confirmed_by"] == ["cam-walkway", "smoke-b3-stair"]
    finally:
        node.stop()
    eventually(lambda: node.counts["alerts"] >= 3)
