"""Poison on every uplink channel, each followed by a real smoke alarm: ingest dead-letters the poison with its
reason, and the alarm still reaches the fire desk's stream, every time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import psycopg
from conftest import ApiServer, SseReader, edge_and_ingest, mqtt_client
from fire_helpers import ALARM, CLEAR, node_config, publish

from alerts.core.models import (
    Alert,
    DeadLetter,
    DeviceStatus,
    Event,
    EventKind,
    Heartbeat,
    NodeStatus,
    Place,
    Reading,
    Role,
    Severity,
    Snapshot,
)
from alerts.core.protocol import uplink_topic
from alerts.intake.writer import MAX_PAYLOAD_BYTES
from deploy.local.services import Service

SITE = Place(sub_district="riverside", community="east-gate", grid="g07", site="poison-court")
DEVICE = SITE.with_device("cam-1")
HUGE = "1" + "0" * 5000


def templates() -> dict[str, dict | list]:
    """A valid message of each channel, as JSON values, for the poisons to spoil."""
    now = datetime.now(UTC)
    models = {
        "events": Event(kind=EventKind.TROUBLE, type="camera_offline", place=DEVICE, source="poison-node"),
        "alerts": Alert(
            kind=EventKind.TROUBLE,
            type="camera_offline",
            severity=Severity.MAJOR,
            place=DEVICE,
            source="poison-node",
            route=Role.OPERATOR,
            dedup_key="k",
        ),
        "heartbeats": Heartbeat(
            node_id="poison-node",
            place=SITE,
            started_at=now,
            devices=[DeviceStatus(device="cam-1", type="camera", online=True)],
        ),
        "deadletters": DeadLetter(topic="zigbee2mqtt/x", payload=b"?", reason="unknown device", source="poison-node"),
        "status": NodeStatus(node_id="poison-node", place=SITE, online=True),
        "snapshot": Snapshot(request_id=uuid4(), node_id="poison-node", place=DEVICE, jpeg=b"\xff\xd8\xff\xd9"),
    }
    out: dict[str, dict | list] = {name: json.loads(m.model_dump_json()) for name, m in models.items()}
    out["readings"] = [json.loads(Reading(place=DEVICE, quantity="temperature", value=21.5).model_dump_json())]
    return out


def poisons(channel: str, template: dict | list) -> list[tuple[bytes, str]]:
    """(payload, a piece of the reason its dead letter must give) for each poison on ``channel``."""

    def spoiled(**fields: object) -> bytes:
        first = dict(template[0] if isinstance(template, list) else template)
        first.update(fields)
        text = json.dumps([first] if isinstance(template, list) else first)
        return text.replace('"<HUGE>"', HUGE).encode()

    number = "value" if channel == "readings" else "ts"
    # A NUL in text reaches the database, which refuses it; a node id with one is not registered to the site.
    text_field = {"readings": "quantity", "events": "title", "alerts": "title", "deadletters": "source"}
    nul = spoiled(**{text_field.get(channel, "node_id"): "nul\u0000byte"})
    nul_refused_by = "refused by the database" if channel in text_field else "is not registered to site"
    ahead = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    return [
        (b'{"ts": "2026-', "Invalid JSON"),
        (spoiled(place="the courtyard"), "place"),
        (spoiled(ts="9999-12-31T23:59:59-14:00"), "outside 2000-01-01"),
        (spoiled(ts="0001-01-01T00:00:00Z"), "outside 2000-01-01"),
        (spoiled(ts=ahead), "outside 2000-01-01"),
        (spoiled(**{number: "<HUGE>"}), "number"),
        (b"[" * 100_000 + b"]" * 100_000, "recursion"),
        (b'"' + b"x" * MAX_PAYLOAD_BYTES + b'"', "over the cap"),
        (nul, nul_refused_by),
    ]


def test_poison_on_every_channel_then_a_smoke_alarm_reaches_the_fire_desk_every_time(
    broker: Service, api: ApiServer, database_url: str, tmp_path: Path
) -> None:
    sent: list[tuple[str, bytes, str]] = []
    alarms = 0
    with (
        edge_and_ingest(node_config(broker.url, tmp_path / "outbox.sqlite3"), broker, database_url),
        mqtt_client(broker, "test-zigbee2mqtt") as sensor,
        mqtt_client(broker, "test-poisoner") as poisoner,
        SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire")) as fire,
    ):
        for channel, template in templates().items():
            topic = uplink_topic(SITE.site, channel)
            for payload, why in poisons(channel, template):
                poisoner.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
                sent.append((topic, payload, why))
                for message, active in ((ALARM, True), (CLEAR, False)):
                    publish(sensor, message)
                    _, change, alert = fire.next(timeout=15)
                    assert (alert["type"], alert["active"]) == ("smoke", active), (channel, why, change)
                alarms += 1
    with psycopg.connect(database_url) as conn:
        letters = conn.execute(
            "SELECT topic, payload, reason FROM dead_letters WHERE source = 'test-ingest'"
        ).fetchall()
    print(f"poisons sent {len(sent)} / dead letters {len(letters)} / alarms through {alarms} of {len(sent)}")
    assert len(letters) == len(sent)
    # Matched by content, not by order: the two ingest lanes store their dead letters each at its own pace.
    left = [(topic, bytes(payload), reason) for topic, payload, reason in letters]
    for topic, payload, why in sent:
        # The dead letter keeps the payload (its head if huge) and says why.
        candidates = [x for x in left if x[0] == topic and payload.startswith(x[1]) and why in x[2]]
        assert candidates, (topic, payload[:80], why, [x for x in left if x[0] == topic])
        left.remove(max(candidates, key=lambda x: len(x[1])))  # the longest head: an empty one fits any payload
