"""Every route of the alert API on a real database: filters, cursor, detail, actions, stream resume, readings,
health, snapshots, reports, duty, webhooks, metrics, OpenAPI, and a table of bad requests."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import uuid4

import httpx
import pytest
from api_helpers import EAST, JPEG, WEST, get, image_bytes, raise_alert, sse_take, write
from conftest import ApiServer, eventually

from alerts.core.models import DeviceStatus, Event, EventKind, EventState, Heartbeat, Reading
from alerts.core.policy import AlertPolicy
from alerts.notify.webhooks import WebhookDispatcher
from alerts.store.database import WriteBatch

PNG = image_bytes("PNG", (16, 12))


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [a["id"] for a in response.json()["items"]]


def test_the_list_filters_by_every_place_level_device_time_and_pages_by_cursor(api: ApiServer) -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    east = [raise_alert(api.database_url, ts=t0 + timedelta(minutes=i))[1] for i in range(5)]
    west = raise_alert(api.database_url, place=WEST, ts=t0 + timedelta(minutes=10))[1]
    fire = api.key("fire")
    newest_first = [str(a.id) for a in reversed(east)]
    assert ids(get(api, "/api/v1/alerts", fire)) == [str(west.id), *newest_first]
    for level in ("sub_district", "community", "grid", "site", "device"):
        assert ids(get(api, "/api/v1/alerts", fire, **{level: getattr(WEST, level)})) == [str(west.id)], level
    window = {"since": (t0 + timedelta(minutes=1)).isoformat(), "until": (t0 + timedelta(minutes=3)).isoformat()}
    assert ids(get(api, "/api/v1/alerts", fire, **window)) == [str(east[2].id), str(east[1].id)]
    assert ids(get(api, "/api/v1/alerts", fire, severity="critical")) == []

    pages, cursor = [], None
    while True:
        response = get(
            api, "/api/v1/alerts", fire, community="east-gate", limit=2, **({"cursor": cursor} if cursor else {})
        )
        pages.append(ids(response))
        if not (cursor := response.json()["next_cursor"]):
            break
    assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]


def test_one_alert_lists_its_events_snapshots_and_audit_trail(api: ApiServer) -> None:
    policy = AlertPolicy()
    first = Event(kind=EventKind.FIRE, type="smoke", place=EAST, source="node-1", snapshot=JPEG)
    second = Event(kind=EventKind.FIRE, type="smoke", state=EventState.END, place=EAST, source="node-1")
    raised, cleared = policy.apply(first), policy.apply(second)
    assert raised is not None and cleared is not None, "the first raises an alert, the second clears it"
    write(api.database_url, WriteBatch(events=[first, second], alerts=[raised, cleared]))
    fire = api.key("fire")
    ack = httpx.post(f"{api.url}/api/v1/alerts/{raised.id}/acknowledge", headers=fire, json={"note": "on our way"})
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert httpx.post(f"{api.url}/api/v1/alerts/{raised.id}/acknowledge", headers=fire).status_code == 409
    assert httpx.post(f"{api.url}/api/v1/alerts/{raised.id}/resolve", headers=fire).status_code == 200

    detail = get(api, f"/api/v1/alerts/{raised.id}", fire).json()
    assert detail["alert"]["active"] is False and detail["alert"]["status"] == "resolved"
    assert [e["id"] for e in detail["events"]] == [str(first.id), str(second.id)]
    assert detail["events"][0]["snapshot_url"] == f"/api/v1/events/{first.id}/snapshot", "relative: no public URL"
    assert detail["events"][1]["snapshot_url"] is None
    assert [(h["action"], h["to_status"], h["note"]) for h in detail["history"]] == [
        ("acknowledge", "acknowledged", "on our way"),
        ("resolve", "resolved", ""),
    ]
    picture = httpx.get(api.url + detail["events"][0]["snapshot_url"], headers=fire)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert picture.content == JPEG


def test_a_reconnecting_stream_gets_exactly_what_it_missed(api: ApiServer) -> None:
    admin, url = api.key("admin"), f"{api.url}/api/v1/alerts/stream"
    raised = []
    [(last_id, change, alert)] = sse_take(url, admin, 1, lambda: raised.append(raise_alert(api.database_url)[1]))
    assert (change, alert["id"]) == ("raised", str(raised[0].id))
    missed = [raise_alert(api.database_url, kind=kind)[1] for kind in (EventKind.SECURITY, EventKind.TROUBLE)]
    # Then one more after the reconnection: the replay must stop at exactly the two missed ones.
    later = []
    got = sse_take(url, {**admin, "Last-Event-ID": last_id}, 3, lambda: later.append(raise_alert(api.database_url)[1]))
    assert [(change, alert["id"]) for _, change, alert in got] == [("raised", str(a.id)) for a in [*missed, *later]]
    assert [int(seq) for seq, _, _ in got] == [int(last_id) + 1, int(last_id) + 2, int(last_id) + 3]


def test_readings_come_bucketed_and_health_comes_from_heartbeats(api: ApiServer) -> None:
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    values = [(0, 20.0), (20, 22.0), (70, 30.0)]  # seconds after t0, °C
    readings = [
        Reading(place=EAST, quantity="temperature", value=v, unit="°C", ts=t0 + timedelta(seconds=s)) for s, v in values
    ]
    beat = Heartbeat(
        node_id="node-1",
        place=EAST.model_copy(update={"device": None}),
        started_at=t0,
        devices=[DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True, detail={"battery": 87})],
    )
    write(api.database_url, WriteBatch(readings=readings, heartbeats=[beat]))
    fire = api.key("fire", community="east-gate")
    response = get(
        api,
        "/api/v1/devices/willow-court/smoke-1/readings",
        fire,
        since=t0.isoformat(),
        until=(t0 + timedelta(minutes=5)).isoformat(),
        bucket=60,
    )
    assert response.status_code == 200, response.text
    assert [(b["bucket"][:19], b["avg"], b["min"], b["max"], b["count"]) for b in response.json()] == [
        ("2024-05-01T12:00:00", 21.0, 20.0, 22.0, 2),
        ("2024-05-01T12:01:00", 30.0, 30.0, 30.0, 1),
    ]
    [node] = get(api, "/api/v1/nodes", fire).json()
    assert node["node_id"] == "node-1" and node["healthy"] is True
    assert node["place"] == EAST.model_dump(exclude={"device"})
    [device] = get(api, "/api/v1/devices", api.key("operator"), site="willow-court").json()
    assert (device["device"], device["online"], device["stale"], device["detail"]) == (
        "smoke-1",
        True,
        False,
        {"battery": 87},
    )
    assert device["place"] == EAST.model_dump(include={"sub_district", "community", "grid"})
    assert get(api, "/api/v1/devices", api.key("operator", community="west-lake")).json() == []
    assert get(api, "/api/v1/stats/hourly", api.key("admin")).json() == []


@pytest.fixture
def report_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    monkeypatch.setenv("PATROLNET_REPORT_MAX_BYTES", "1000")
    monkeypatch.setenv("PATROLNET_REPORT_BURST", "2")
    server = ApiServer(database_url)
    with server:
        yield server


def test_a_registered_reporter_reports_to_the_grids_police_with_the_person_on_duty(report_api: ApiServer) -> None:
    api, admin = report_api, report_api.key("admin", community="east-gate")
    shift = {
        "sub_district": "riverside",
        "community": "east-gate",
        "grid": "g07",
        "person": "Officer Li",
        "contact": "110-7",
        "weekday": datetime.now(UTC).isoweekday(),
        "starts": "00:00",
        "ends": "00:00",
    }
    created = httpx.post(f"{api.url}/api/v1/duty", headers=admin, json=shift)
    assert created.status_code == 201, created.text
    outside = httpx.post(f"{api.url}/api/v1/duty", headers=admin, json={**shift, "community": "west-lake"})
    assert outside.status_code == 403
    reporter = {
        "name": "Tea shop",
        "contact": "555",
        "sub_district": "riverside",
        "community": "east-gate",
        "grid": "g07",
        "site": "market-street",
    }
    registered = httpx.post(f"{api.url}/api/v1/reporters", headers=admin, json=reporter)
    assert registered.status_code == 201, registered.text
    key = {"Authorization": f"Bearer {registered.json()['key']}"}

    sent = httpx.post(
        f"{api.url}/api/v1/reports",
        headers=key,
        data={"text": "Men trying car doors"},
        files={"photo": ("x.png", PNG, "image/png")},
    )
    assert sent.status_code == 201, sent.text
    police = api.key("police", community="east-gate")
    [alert] = get(api, "/api/v1/alerts", police).json()["items"]
    assert (alert["id"], alert["kind"], alert["route"]) == (sent.json()["alert_id"], "report", "police")
    assert alert["place"]["site"] == "market-street" and alert["attributes"]["text"] == "Men trying car doors"
    assert (alert["on_duty"], alert["on_duty_contact"]) == ("Officer Li", "110-7")
    # Logged for the streams like any alert change, and linked to its event like any alert.
    stream = f"{api.url}/api/v1/alerts/stream"
    [(_, change, streamed)] = sse_take(stream, {**police, "Last-Event-ID": "0"}, 1, quiet_s=2)
    assert (change, streamed["id"]) == ("raised", alert["id"])
    detail = get(api, f"/api/v1/alerts/{alert['id']}", police).json()
    assert [e["id"] for e in detail["events"]] == [sent.json()["event_id"]]
    picture = get(api, f"/api/v1/events/{sent.json()['event_id']}/snapshot", police)
    assert picture.headers["content-type"] == "image/jpeg"  # every photo is written again, without its metadata
    assert get(api, "/api/v1/alerts", api.key("police", community="west-lake")).json()["items"] == []
    assert get(api, "/api/v1/alerts", api.key("fire")).json()["items"] == []

    gif = httpx.post(
        f"{api.url}/api/v1/reports",
        headers=key,
        data={"text": "x"},
        files={"photo": ("x.jpg", b"GIF89a" + b"\x00" * 10, "image/jpeg")},
    )
    big = httpx.post(
        f"{api.url}/api/v1/reports",
        headers=key,
        data={"text": "x"},
        files={"photo": ("x.jpg", JPEG * 20, "image/jpeg")},
    )
    assert (gif.status_code, big.status_code) == (415, 413)
    second = httpx.post(f"{api.url}/api/v1/reports", headers=key, data={"text": "They left by e-bike"})
    limited = httpx.post(f"{api.url}/api/v1/reports", headers=key, data={"text": "again"})
    assert (second.status_code, limited.status_code) == (201, 429)
    assert int(limited.headers["Retry-After"]) > 0

    shifts = get(api, "/api/v1/duty", admin).json()
    assert [s["person"] for s in shifts] == ["Officer Li"]
    changed = httpx.put(f"{api.url}/api/v1/duty/{shifts[0]['id']}", headers=admin, json={**shift, "person": "Wang"})
    assert changed.json()["person"] == "Wang"
    assert httpx.delete(f"{api.url}/api/v1/duty/{shifts[0]['id']}", headers=admin).status_code == 204
    [listed] = get(api, "/api/v1/reporters", admin).json()
    assert httpx.delete(f"{api.url}/api/v1/reporters/{listed['id']}", headers=admin).status_code == 204
    assert get(api, "/api/v1/reporters", admin).json() == []


class Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 500 to the first POST and 200 after: the dispatcher must retry."""

    received: ClassVar[list[tuple[dict, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(500 if len(Receiver.received) == 1 else 200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hooks_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The API with loopback allowed as a webhook target, where the tests' receivers listen."""
    monkeypatch.setenv("PATROLNET_WEBHOOK_ALLOW", "127.0.0.1")
    server = ApiServer(database_url)
    with server:
        yield server


def test_webhooks_push_matching_alerts_with_retries_and_a_delivery_log(hooks_api: ApiServer) -> None:
    api = hooks_api
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    admin = api.key("admin")
    hook = {
        "url": f"http://127.0.0.1:{server.server_port}/hook",
        "role": "fire",
        "community": "east-gate",
        "secret": "s3cret",
    }
    registered = httpx.post(f"{api.url}/api/v1/webhooks", headers=admin, json=hook)
    assert registered.status_code == 201, registered.text
    fire = raise_alert(api.database_url)[1]
    raise_alert(api.database_url, place=WEST)  # another community
    raise_alert(api.database_url, kind=EventKind.SECURITY)  # another kind
    dispatcher = WebhookDispatcher(api.database_url, poll_s=0.05, base_backoff_s=0.2, allow="127.0.0.1")
    dispatcher.start()
    try:
        eventually(lambda: len(Receiver.received) == 2)
    finally:
        dispatcher.stop()
        server.shutdown()
    (_, body), (headers, body2) = Receiver.received
    assert body == body2
    payload = json.loads(body)
    assert (payload["change"], payload["alert"]["id"]) == ("raised", str(fire.id))
    assert headers["X-Patrolnet-Signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    [delivery] = get(api, f"/api/v1/webhooks/{registered.json()['id']}/deliveries", admin).json()
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("delivered", 2, 200)
    assert [w["url"] for w in get(api, "/api/v1/webhooks", admin).json()] == [hook["url"]]
    assert httpx.delete(f"{api.url}/api/v1/webhooks/{registered.json()['id']}", headers=admin).status_code == 204


def test_health_and_metrics(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    raise_alert(api.database_url)
    get(api, "/api/v1/alerts", api.key("fire"))
    assert httpx.get(f"{api.url}/metrics").status_code == 401
    assert get(api, "/metrics", api.key("police")).status_code == 403
    scraped = get(api, "/metrics", api.key("operator"))
    assert scraped.status_code == 200
    assert 'patrolnet_http_requests_total{method="GET",route="/api/v1/alerts",status="200"} 1.0' in scraped.text
    assert 'patrolnet_open_alerts{kind="fire",status="new"} 1.0' in scraped.text


def test_openapi_documents_every_route_and_schema(api: ApiServer) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for expected in [
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/alerts/stream"),
        ("GET", "/api/v1/alerts.cap"),
        ("GET", "/api/v1/alerts/{alert_id}/cap"),
        ("POST", "/api/v1/alerts/{alert_id}/{action}"),
        ("GET", "/api/v1/events/{event_id}/snapshot"),
        ("GET", "/api/v1/devices/{site}/{device}/readings"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/devices"),
        ("POST", "/api/v1/reports"),
        ("POST", "/api/v1/duty"),
        ("POST", "/api/v1/webhooks"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
    ]:
        assert expected in routes
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
    ours = {n: s for n, s in spec["components"]["schemas"].items() if "ValidationError" not in n and "Body_" not in n}
    undocumented = [
        f"{n}.{p}"
        for n, s in ours.items()
        for p, f in s.get("properties", {}).items()
        if "description" not in f and "$ref" not in f
    ]
    assert undocumented == []


def test_bad_requests_get_a_4xx_with_a_message(api: ApiServer) -> None:
    _, alert = raise_alert(api.database_url)
    admin, fire, a = api.key("admin"), api.key("fire"), f"/api/v1/alerts/{alert.id}"
    httpx.post(f"{api.url}{a}/resolve", headers=fire)
    day = datetime(2024, 5, 1, tzinfo=UTC).isoformat()
    shift = {
        "sub_district": "s",
        "community": "c",
        "grid": "g",
        "person": "p",
        "weekday": 1,
        "starts": "08:00",
        "ends": "09:00",
    }
    # (method, path, httpx.request's keyword arguments, the status expected)
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/api/v1/alerts/not-a-uuid", {}, 422),
        ("GET", "/api/v1/alerts", {"params": {"since": "yesterday"}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"since": "2024-05-01T00:00:00"}}, 422),  # no time zone
        ("GET", "/api/v1/alerts", {"params": {"since": day, "until": day}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"colour": "red"}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"kind": "volcano"}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"limit": 0}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"limit": 100000}}, 422),
        ("GET", "/api/v1/alerts", {"params": {"community": "east\x00gate"}}, 422),  # PostgreSQL refuses NUL
        ("GET", "/api/v1/alerts", {"params": {"since": "0001-01-01T00:00:00+14:00"}}, 200),
        ("GET", "/api/v1/alerts", {"params": {"cursor": "not-a-cursor"}}, 400),
        ("GET", "/api/v1/alerts", {"params": {"cursor": "eHx5"}}, 400),  # base64 of "x|y"
        ("GET", "/api/v1/alerts/stream", {"headers": {"Last-Event-ID": "abc"}}, 400),
        ("GET", "/api/v1/alerts/stream", {"headers": {"Last-Event-ID": "9" * 40}}, 400),
        ("GET", f"{a}", {"params": {"extra": "1"}}, 200),  # path routes ignore query strings
        ("POST", f"{a}/explode", {}, 404),
        ("POST", f"{a}/acknowledge", {"content": b"not json", "headers": {"Content-Type": "application/json"}}, 422),
        ("POST", f"{a}/acknowledge", {"json": {"note": "x" * 3000}}, 422),
        ("POST", f"{a}/acknowledge", {}, 409),  # already resolved
        ("POST", f"/api/v1/alerts/{uuid4()}/resolve", {}, 404),
        ("GET", "/api/v1/events/nope/snapshot", {}, 422),
        ("GET", f"/api/v1/events/{uuid4()}/snapshot", {}, 404),
        ("GET", "/api/v1/devices/s/d/readings", {"params": {"bucket": 0}}, 422),
        ("GET", "/api/v1/devices/s/d/readings", {"params": {"bucket": 1, "since": "2000-01-01T00:00:00Z"}}, 422),
        ("GET", "/api/v1/devices", {"params": {"region": "x"}}, 422),
        ("POST", "/api/v1/duty", {"json": {**shift, "weekday": 9}}, 422),
        ("POST", "/api/v1/duty", {"json": {**shift, "timezone": "Mars/Olympus"}}, 422),
        ("POST", "/api/v1/duty", {"json": {**shift, "starts": "25:00"}}, 422),
        ("POST", "/api/v1/duty", {"json": {**shift, "starts": "08:00+02:00"}}, 422),
        ("POST", "/api/v1/duty", {"json": {**shift, "person": "a\x00b"}}, 422),
        ("PUT", f"/api/v1/duty/{uuid4()}", {"json": shift}, 404),
        ("POST", "/api/v1/webhooks", {"json": {"url": "ftp://x", "role": "fire"}}, 422),
        ("POST", "/api/v1/webhooks", {"json": {"url": "http://x.example/h"}}, 422),
        ("POST", "/api/v1/webhooks", {"json": {"url": "http://x.example/h", "role": "edge"}}, 422),
        ("POST", "/api/v1/reporters", {"json": {"name": "x"}}, 422),
        ("DELETE", f"/api/v1/reporters/{uuid4()}", {}, 404),
        ("GET", "/api/v1/nowhere", {}, 404),
        ("DELETE", "/api/v1/alerts", {}, 405),
    ]
    for method, path, kwargs, status in cases:
        who = fire if path.startswith("/api/v1/alerts") or "snapshot" in path or "readings" in path else admin
        headers = {**who, **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{api.url}{path}", headers=headers, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        if status >= 400:
            assert response.json()["detail"], (method, path)
    report = httpx.post(f"{api.url}/api/v1/reports", headers=api.key("reporter"), json={"text": "x"})
    assert report.status_code in (403, 422) and report.json()["detail"]
