"""A vanished node, and coverage notices: trouble that blinds a device reaches the desks whose alarms it feeds.

The node and ingest run as real processes; the node is SIGKILLed. The watchdog's heartbeat path raises
``node_offline`` on its own; the last-will path is tested by publishing the will's NodeStatus by hand.
``/api/v1/nodes`` and ``/metrics`` show what the watchdog holds and each ingest worker's liveness.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from api_helpers import JPEG, raise_alert, signed_in_page, write
from conftest import ApiServer, SseReader, eventually, mqtt_client
from fault_helpers import env, ingest, node_yaml
from fire_helpers import query
from prometheus_client.parser import text_string_to_metric_families

from alerts.auth import Principal
from alerts.core.models import Alert, DeviceStatus, EventKind, Heartbeat, NodeStatus, Place, Role, Severity
from alerts.core.protocol import uplink_topic
from alerts.coverage import may_change
from alerts.intake.watchdog import WatchdogSettings, check_nodes
from alerts.store.database import WriteBatch
from deploy.local.services import Service, spawn

SITE = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")


def next_node_offline(stream: SseReader, timeout: float) -> tuple[str, dict]:
    """The next node_offline change on a stream, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        _, change, alert = stream.next(timeout=max(0.1, deadline - time.monotonic()))
        if alert["type"] == "node_offline":
            return change, alert


def test_a_vanished_node_is_raised_to_the_operator_and_the_fire_desk_and_clears_when_back(
    broker: Service, database_url: str, api: ApiServer, tmp_path: Path
) -> None:
    heartbeat_s, missed = 1.0, 3
    config = node_yaml(tmp_path, broker, heartbeat_s=heartbeat_s)
    with ExitStack() as stack:
        ingest(broker, database_url, stack, "--name", "watch", "--offline-after", str(missed))
        node = spawn(["edge", "run", "--config", str(config)], env(broker.url, database_url), stack)
        eventually(
            lambda: query(database_url, "SELECT 1 FROM nodes WHERE heartbeat_interval_s IS NOT NULL"), timeout=90
        )
        operator = stack.enter_context(SseReader(f"{api.url}/api/v1/alerts/stream", api.key("operator")))
        fire = stack.enter_context(SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire")))
        police = stack.enter_context(SseReader(f"{api.url}/api/v1/alerts/stream", api.key("police")))

        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        killed = time.monotonic()
        change, raised = next_node_offline(operator, timeout=30)
        noticed = time.monotonic() - killed
        assert change == "raised" and raised["active"] is True and raised["kind"] == "trouble"
        assert raised["route"] == "operator" and sorted(raised["notify"]) == ["fire", "police"]
        for desk in (fire, police):
            change, notice = next_node_offline(desk, timeout=10)
            assert (change, notice["id"]) == ("raised", raised["id"])
        print(f"node SIGKILLed: node_offline on the desks after {noticed:.1f} s (limit {missed} x {heartbeat_s} s)")
        assert noticed < missed * heartbeat_s + 10

        spawn(["edge", "run", "--config", str(config)], env(broker.url, database_url), stack)
        restarted = time.monotonic()
        change, cleared = next_node_offline(operator, timeout=60)
        assert (change, cleared["id"], cleared["active"]) == ("cleared", raised["id"], False)
        assert next_node_offline(fire, timeout=10)[0] == "cleared"
        print(f"node restarted: node_offline cleared after {time.monotonic() - restarted:.1f} s")
    assert query(database_url, "SELECT count(*) FROM alerts WHERE type = 'node_offline'") == [(1,)]


def heartbeat(node_id: str, devices: list[DeviceStatus] | None = None) -> bytes:
    beat = Heartbeat(node_id=node_id, place=SITE, started_at=datetime.now(UTC), devices=devices or [])
    return beat.model_dump_json().encode()


@pytest.fixture
def uplink(broker: Service) -> Iterator[mqtt.Client]:
    with mqtt_client(broker, "test-edge-uplink") as client:
        yield client


def send(client: mqtt.Client, channel: str, payload: bytes, retain: bool = False) -> None:
    client.publish(uplink_topic(SITE.site, channel), payload, qos=1, retain=retain).wait_for_publish(timeout=5)


def test_a_last_will_raises_node_offline_at_once_and_a_heartbeat_clears_it(
    broker: Service, database_url: str, api: ApiServer, uplink: mqtt.Client
) -> None:
    with ExitStack() as stack:
        # Several workers run watchdogs: the alert is still raised once.
        for name in ("watch-1", "watch-2"):
            ingest(broker, database_url, stack, "--name", name)
        eventually(lambda: query(database_url, "SELECT count(*) FROM ingest_workers")[0][0] == 2, timeout=90)
        stored_once(uplink, database_url, heartbeat("will-node"), "SELECT 1 FROM nodes WHERE node_id = 'will-node'")
        with SseReader(f"{api.url}/api/v1/alerts/stream", api.key("fire", community="east-gate")) as fire:
            will = NodeStatus(node_id="will-node", place=SITE, online=False)
            sent = time.monotonic()
            send(uplink, "status", will.model_dump_json().encode(), retain=True)
            change, notice = next_node_offline(fire, timeout=15)
            print(f"last will: node_offline on the fire desk after {time.monotonic() - sent:.1f} s")
            assert change == "raised" and "last will" in notice["title"] and "fire" in notice["notify"]
            send(uplink, "heartbeats", heartbeat("will-node"))
            assert next_node_offline(fire, timeout=15)[0] == "cleared"
        time.sleep(2)  # two watchdogs, several rounds each: still one alert
    assert query(database_url, "SELECT count(*), bool_or(active) FROM alerts WHERE type = 'node_offline'") == [
        (1, False)
    ]
    assert query(database_url, "SELECT change FROM alert_changes ORDER BY seq") == [("raised",), ("cleared",)]


def stored_once(uplink: mqtt.Client, database_url: str, beat: bytes, check: str) -> None:
    """Sends a heartbeat until ``check`` finds it: until then no worker had subscribed, and the broker dropped it."""

    def stored() -> list[tuple]:
        send(uplink, "heartbeats", beat)
        return query(database_url, check)

    eventually(stored, timeout=90, interval=0.5)


def trouble(type_: str, device: str) -> bytes:
    place = SITE.with_device(device)
    alert = Alert(kind=EventKind.TROUBLE, type=type_, severity=Severity.MAJOR, place=place, source="n1",
                  route=Role.OPERATOR, dedup_key=f"{place.site}/{device}/trouble/{type_}/")  # fmt: skip
    return alert.model_dump_json().encode()


def test_coverage_notices_reach_the_desks_the_device_feeds_and_no_other_trouble(
    broker: Service, database_url: str, api: ApiServer, uplink: mqtt.Client
) -> None:
    linked = DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True, detail={"cameras": ["cam-stairs"]})
    with ExitStack() as stack:
        ingest(broker, database_url, stack, "--name", "coverage")
        stored_once(uplink, database_url, heartbeat("n1", [linked]), "SELECT 1 FROM devices WHERE device = 'smoke-1'")
        sent = {
            "silent": ("sensor_silent", "smoke-1"),
            "battery": ("battery_low", "smoke-1"),
            "gate": ("camera_offline", "cam-gate"),
            "stairs": ("camera_blinded", "cam-stairs"),
        }
        for type_, device in sent.values():
            send(uplink, "alerts", trouble(type_, device))
        eventually(lambda: query(database_url, "SELECT count(*) FROM alerts")[0][0] == len(sent), timeout=30)

    def seen(role: str) -> set[tuple[str, str]]:
        response = httpx.get(f"{api.url}/api/v1/alerts", headers=api.key(role))
        assert response.status_code == 200, response.text
        return {(a["type"], a["place"]["device"]) for a in response.json()["items"]}

    assert seen("operator") == set(sent.values())
    assert seen("fire") == {sent["silent"], sent["stairs"]}
    assert seen("police") == {sent["gate"], sent["stairs"]}
    assert httpx.get(f"{api.url}/api/v1/alerts", headers=api.key("fire"), params={"kind": "trouble"}).status_code == 403


def test_the_fire_desk_page_shows_a_coverage_notice_grey_and_labelled_not_as_an_alarm(api: ApiServer) -> None:
    _, fire = raise_alert(api.database_url, EventKind.FIRE, SITE.with_device("smoke-2"), title="Smoke alarm")
    _, silent = raise_alert(
        api.database_url, EventKind.TROUBLE, SITE.with_device("smoke-1"), type="sensor_silent", title="Sensor silent"
    )
    with signed_in_page(api, "fire") as page:
        page.wait(f"document.querySelectorAll('[data-open=\"{silent.id}\"]').length === 1")
        dom = page.dom()
    rows = {
        alert_id: (classes.split(), html)
        for classes, html, alert_id in re.findall(
            r'<tr class="([^"]*)">((?:(?!</tr>).)*?data-open="([0-9a-f-]{36})".*?)</tr>', dom, flags=re.S
        )
    }
    chip = '<span class="sev coverage">coverage</span>'
    assert "coverage" in rows[str(silent.id)][0] and chip in rows[str(silent.id)][1]
    assert "coverage" not in rows[str(fire.id)][0] and chip not in rows[str(fire.id)][1]
    assert '<span class="sev major">major</span>' in rows[str(fire.id)][1], "the alarm keeps its severity chip"


def metric_samples(api: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` (operator key) by name and labels."""
    response = httpx.get(f"{api.url}/metrics", headers=api.key("operator"))
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def worker_counters(samples: dict, worker: str) -> dict[str, float]:
    return {
        dict(labels)["counter"]: value
        for (name, labels), value in samples.items()
        if name == "patrolnet_ingest_worker_count" and dict(labels)["worker"] == worker
    }


def node(api: ApiServer, node_id: str) -> dict:
    response = httpx.get(f"{api.url}/api/v1/nodes", headers=api.key("fire"))
    assert response.status_code == 200, response.text
    return next(n for n in response.json() if n["node_id"] == node_id)


def test_nodes_and_metrics_show_a_vanished_node_and_each_ingest_workers_liveness(
    broker: Service, database_url: str, api: ApiServer, uplink: mqtt.Client
) -> None:
    with ExitStack() as stack:
        ingest(broker, database_url, stack, "--name", "liveness")
        stored_once(uplink, database_url, heartbeat("will-node"), "SELECT 1 FROM nodes WHERE node_id = 'will-node'")
        before = node(api, "will-node")
        assert (before["online"], before["offline"], before["offline_since"]) == (None, False, None)

        will = NodeStatus(node_id="will-node", place=SITE, online=False)
        send(uplink, "status", will.model_dump_json().encode(), retain=True)
        gone = eventually(lambda: (n := node(api, "will-node"))["offline"] and n, timeout=30, interval=0.3)
        assert gone["online"] is False and gone["offline_since"] is not None and gone["status_at"] is not None
        samples = eventually(
            lambda: (s := metric_samples(api))[("patrolnet_nodes_offline", ())] == 1 and s, timeout=15, interval=0.3
        )
        # The worker's row now: the counters settle once nothing more is sent (the row is rewritten every second).
        eventually(lambda: worker_counters(metric_samples(api), "liveness").get("messages", 0) >= 2, timeout=15)
        samples = metric_samples(api)
        ((counters, batch_age),) = query(
            database_url,
            "SELECT counters, extract(epoch FROM now() - last_batch_at) FROM ingest_workers WHERE name = 'liveness'",
        )
        exposed = worker_counters(samples, "liveness")
        print(f"ingest liveness: counters {exposed}, last batch {batch_age:.1f} s ago")
        assert exposed == {k: float(v) for k, v in counters.items()} and exposed["messages"] >= 2
        assert (
            abs(samples[("patrolnet_ingest_last_batch_age_seconds", (("worker", "liveness"),))] - float(batch_age)) < 5
        )
        assert 0 <= samples[("patrolnet_ingest_report_age_seconds", (("worker", "liveness"),))] < 10

        send(uplink, "heartbeats", heartbeat("will-node"))
        back = eventually(lambda: not (n := node(api, "will-node"))["offline"] and n, timeout=30, interval=0.3)
        assert back["online"] is True and back["offline_since"] is None and back["healthy"] is True
        after = eventually(
            lambda: (s := metric_samples(api))[("patrolnet_nodes_offline", ())] == 0 and s, timeout=15, interval=0.3
        )
        assert worker_counters(after, "liveness")["messages"] > exposed["messages"], "the heartbeat counted"


NOTICE: dict[str, Any] = dict(kind=EventKind.TROUBLE, type="camera_blinded", severity=Severity.MAJOR, source="n1",
              place=SITE.with_device("cam-stairs"), route=Role.OPERATOR, notify=[Role.FIRE, Role.POLICE],
              dedup_key="willow-court/cam-stairs/trouble/camera_blinded/")  # fmt: skip


@pytest.mark.parametrize(
    ("role", "kind", "refused"),
    [
        (Role.FIRE, EventKind.TROUBLE, True),
        (Role.POLICE, EventKind.TROUBLE, True),
        (Role.OPERATOR, EventKind.TROUBLE, False),
        (Role.ADMIN, EventKind.TROUBLE, False),
        (Role.FIRE, EventKind.FIRE, False),
        (Role.POLICE, EventKind.SECURITY, False),
    ],
)
def test_only_the_operator_and_admin_may_close_a_coverage_notice(role: Role, kind: EventKind, refused: bool) -> None:
    alert = Alert.model_validate(
        {**NOTICE, "kind": kind, "notify": NOTICE["notify"] if kind is EventKind.TROUBLE else []}
    )
    reason = may_change(Principal(name="desk", role=role, community="east-gate"), alert)
    assert (reason is not None) == refused, reason
    if reason is not None:
        assert f"role {role}" in reason and "coverage notice" in reason and "operator desk" in reason


def test_the_fire_desk_may_read_a_coverage_notice_but_not_close_it(api: ApiServer) -> None:
    _, silent = raise_alert(
        api.database_url, EventKind.TROUBLE, SITE.with_device("smoke-1"), type="sensor_silent", title="Sensor silent"
    )
    fire, operator = api.key("fire"), api.key("operator")
    seen = httpx.get(f"{api.url}/api/v1/alerts/{silent.id}", headers=fire, timeout=10)
    assert seen.status_code == 200 and seen.json()["alert"]["notify"] == ["fire"]
    refused = httpx.post(f"{api.url}/api/v1/alerts/{silent.id}/acknowledge", headers=fire, json={}, timeout=10)
    assert refused.status_code == 403 and "coverage notice" in refused.json()["detail"]
    done = httpx.post(f"{api.url}/api/v1/alerts/{silent.id}/acknowledge", headers=operator, json={}, timeout=10)
    assert done.status_code == 200 and done.json()["status"] == "acknowledged"


def test_a_coverage_notices_camera_snapshot_is_seen_by_the_desks_it_notifies(api: ApiServer) -> None:
    linked = DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True, detail={"cameras": ["cam-stairs"]})
    write(api.database_url, WriteBatch(heartbeats=[Heartbeat(node_id="n1", place=SITE, started_at=datetime.now(UTC),
                                                        devices=[linked])]))  # fmt: skip
    stairs, _ = raise_alert(api.database_url, EventKind.TROUBLE, SITE.with_device("cam-stairs"),
                            type="camera_blinded", snapshot=JPEG)  # fmt: skip
    gate, _ = raise_alert(api.database_url, EventKind.TROUBLE, SITE.with_device("cam-gate"),
                          type="camera_blinded", snapshot=JPEG)  # fmt: skip
    keys = {
        "operator": api.key("operator"),
        "fire": api.key("fire", community="east-gate"),
        "police": api.key("police"),
        "fire elsewhere": api.key("fire", community="west-lake"),
    }

    def status(who: str, event_id: object) -> int:
        response = httpx.get(f"{api.url}/api/v1/events/{event_id}/snapshot", headers=keys[who])
        assert response.status_code in (200, 404), response.text
        assert response.status_code == 404 or response.content == JPEG
        return response.status_code

    seen = {
        (who, camera): status(who, event.id) for who in keys for camera, event in (("stairs", stairs), ("gate", gate))
    }
    assert seen == {
        ("operator", "stairs"): 200, ("operator", "gate"): 200,
        ("fire", "stairs"): 200, ("fire", "gate"): 404,  # the gate camera feeds no fire sensor
        ("police", "stairs"): 200, ("police", "gate"): 200,
        ("fire elsewhere", "stairs"): 404, ("fire elsewhere", "gate"): 404,
    }  # fmt: skip


def test_a_node_whose_oldest_message_waits_unconfirmed_raises_trouble_to_the_operator(database_url: str) -> None:
    """The heartbeat's ``oldest_unconfirmed_s`` past ``unconfirmed_after_s`` is ``uplink_unconfirmed`` trouble for
    the operators (not a coverage notice: the node still sees and sends); the next heartbeat under it clears it."""
    place = Place(sub_district="n", community="c", grid="g", site="unconfirmed-yard")
    settings = WatchdogSettings(unconfirmed_after_s=120)

    def beat(oldest_s: float | None) -> list[tuple[Any, ...]]:
        sent = Heartbeat(node_id="late-node", place=place, started_at=datetime(2026, 1, 1, tzinfo=UTC),
                         unconfirmed=5 if oldest_s else 0, oldest_unconfirmed_s=oldest_s)  # fmt: skip
        write(database_url, WriteBatch(heartbeats=[sent]))
        with psycopg.connect(database_url) as conn:
            check_nodes(conn, settings)
        return query(database_url, "SELECT route, notify, active FROM alerts WHERE type = 'uplink_unconfirmed'")

    assert beat(60.0) == []
    assert beat(300.0) == [("operator", [], True)]
    assert beat(None) == [("operator", [], False)]
