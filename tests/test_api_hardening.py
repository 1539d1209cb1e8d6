"""The alert API as an attacker would try it: bodies before keys, oversize and chunked bodies, NUL characters,
dates at the ends of the calendar, odd Last-Event-IDs, revoked keys on open streams, framing and caching,
and webhooks pointed inward. Every answer is a 4xx with an ErrorBody, never a 500."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import uuid4

import httpx
import psycopg
import pytest
from api_helpers import EAST, JPEG, raise_alert
from conftest import ApiServer, SseReader, eventually

from alerts.api.http import ApiSettings, ErrorBody
from alerts.auth import hash_key
from alerts.core.models import EventKind
from alerts.notify.webhooks import NO_RESPONSE, WebhookDispatcher


def raw_request(api: ApiServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Sends a request's head (and maybe part of a body) on a socket and reads the answer, however much of
    the announced body was sent: an answer that arrives without the body proves the body was never read."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = top.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(rest) < int(headers.get("content-length", 0)):
            rest += sock.recv(65536)
    return int(status_line.split()[1]), headers, rest


def upload_head(path: str, length: str, key: dict[str, str] | None = None, chunked: bool = False) -> str:
    auth = "".join(f"{k}: {v}\n" for k, v in (key or {}).items())
    size = "Transfer-Encoding: chunked\n" if chunked else f"Content-Length: {length}\n"
    return f"POST {path} HTTP/1.1\nHost: 127.0.0.1\n{auth}Content-Type: multipart/form-data; boundary=b\n{size}"


def test_an_upload_is_refused_by_its_headers_before_its_body_is_read(api: ApiServer) -> None:
    reporter, police = api.key("reporter"), api.key("police")
    huge = str(300 * 1024 * 1024)
    # 300 MB announced, not one byte sent: each answer can only come from the headers.
    anonymous = raw_request(api, upload_head("/api/v1/reports", huge))
    unknown = raw_request(api, upload_head("/api/v1/reports", huge, {"Authorization": "Bearer pn_guess"}))
    wrong_role = raw_request(api, upload_head("/api/v1/reports", huge, police))
    too_big = raw_request(api, upload_head("/api/v1/reports", huge, reporter))
    assert (anonymous[0], unknown[0], wrong_role[0], too_big[0]) == (401, 401, 403, 413)
    assert anonymous[1]["www-authenticate"] == "Bearer"
    assert "larger than" in json.loads(too_big[2])["detail"]
    # Every route has a limit, JSON routes a small one.
    admin = api.key("admin")
    duty = raw_request(api, upload_head("/api/v1/duty", "100000", admin))
    assert duty[0] == 413

    # A chunked body has no length to check up front: it is cut off once it grows past the limit.
    part = b'--b\r\nContent-Disposition: form-data; name="photo"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    chunk = b"x" * 65536
    chunks = ApiSettings().report_max_bytes // len(chunk) + 2  # past the limit of a report's photos
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [part + JPEG] + [chunk] * chunks) + b"0\r\n\r\n"
    status, _, answer = raw_request(api, upload_head("/api/v1/reports", "", reporter, chunked=True), body)
    assert status == 413 and "larger than" in json.loads(answer)["detail"], answer
    anonymous_chunked = raw_request(api, upload_head("/api/v1/reports", "", chunked=True), body[:100_000])
    assert anonymous_chunked[0] == 401


def test_the_former_server_errors_are_4xx_and_bad_values_never_reach_a_500(api: ApiServer) -> None:
    raise_alert(api.database_url, snapshot=JPEG)
    admin, fire = api.key("admin"), api.key("fire")
    year_one = "0001-01-01T00:00:00Z"
    deep = "[" * 100_000 + "]" * 100_000
    as_json = {"Content-Type": "application/json"}
    shift = {"sub_district": "s", "community": "c", "grid": "g", "person": "p", "weekday": 1, "starts": "08:00",
             "ends": "09:00"}  # fmt: skip
    # (who, method, path, httpx.request's keyword arguments, the status expected)
    cases: list[tuple[dict[str, str], str, str, dict[str, Any], int]] = [
        (fire, "GET", "/api/v1/stats/hourly", {"params": {"kind": "security"}}, 403),
        (fire, "GET", "/api/v1/stats/hourly", {"params": {"until": year_one}}, 200),
        (fire, "GET", "/api/v1/devices/s/d/readings", {"params": {"until": year_one}}, 200),
        (fire, "GET", "/api/v1/devices/s/d/readings", {"params": {"since": "9999-12-31T23:59:59-14:00"}}, 200),
        (fire, "GET", "/api/v1/stats/hourly", {"params": {"until": "9999-12-31T23:59:59+14:00"}}, 200),
        (fire, "GET", "/api/v1/alerts", {"params": {"until": "0001-01-01T00:00:00+14:00"}}, 200),
        (fire, "GET", "/api/v1/alerts/stream", {"headers": {"Last-Event-ID": "²".encode()}}, 400),
        (
            fire,
            "GET",
            "/api/v1/alerts/stream",
            {"headers": {"Last-Event-ID": "١٢".encode()}},
            400,
        ),  # Arabic-Indic digits
        (fire, "GET", "/api/v1/alerts/stream", {"params": {"community": "\x00"}}, 422),
        (fire, "GET", "/api/v1/alerts/stream", {"params": {"kind": "security"}}, 403),
        (fire, "GET", "/api/v1/alerts.cap", {"params": {"site": "a\x00"}}, 422),
        (fire, "GET", "/api/v1/devices/a%00b/d/readings", {}, 422),
        (fire, "GET", "/api/v1/alerts", {"params": {"limit": "9" * 5000}}, 422),
        (fire, "GET", "/api/v1/devices/s/d/readings", {"params": {"bucket": "9" * 40}}, 422),
        (fire, "POST", f"/api/v1/alerts/{uuid4()}/acknowledge", {"json": {"note": "a\x00b"}}, 404),
        (admin, "POST", "/api/v1/duty", {"json": {**shift, "person": "a\x00b"}}, 422),
        (admin, "POST", "/api/v1/duty", {"json": {**shift, "contact": "\x00"}}, 422),
        (admin, "POST", "/api/v1/duty", {"json": {**shift, "weekday": int("9" * 40)}}, 422),
        (admin, "POST", "/api/v1/duty", {"content": '{"weekday": ' + "9" * 5000 + "}", "headers": as_json}, 400),
        (admin, "POST", "/api/v1/duty", {"content": deep[:60_000], "headers": as_json}, 400),
        (admin, "POST", "/api/v1/webhooks", {"json": {"url": "http://a\x00b.example/", "role": "fire"}}, 422),
        (admin, "POST", "/api/v1/reporters", {"json": {**shift, "name": "\x00", "site": "x"}}, 422),
        (admin, "GET", "/api/v1/reporters", {"params": {"grid": "%00"}}, 200),  # a literal percent sign is fine
    ]
    for who, method, path, kwargs, status in cases:
        headers = {**who, **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{api.url}{path}", headers=headers, timeout=10, **kwargs)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        if status >= 400:
            ErrorBody.model_validate(response.json())


def test_a_stream_ends_when_its_key_is_revoked(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATROLNET_KEY_CACHE_S", "1")
    api = ApiServer(database_url)
    with api:
        desk, other = api.key("fire"), api.key("fire")
        url = f"{api.url}/api/v1/alerts/stream"
        with SseReader(url, desk) as revoked, SseReader(url, other) as kept:
            assert (revoked.status, kept.status) == (200, 200)
            raise_alert(database_url)
            assert revoked.next()[1] == "raised" and kept.next()[1] == "raised"
            with psycopg.connect(database_url, autocommit=True) as conn:
                key_hash = hash_key(desk["Authorization"].split()[1])
                conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", (key_hash,))
            revoked_at = time.monotonic()
            # Within the key cache time and one poll of the stream, the revoked stream ends.
            eventually(lambda: not revoked._thread.is_alive(), timeout=15)
            closed_after = time.monotonic() - revoked_at
            raise_alert(database_url, place=EAST.with_device("smoke-2"))
            assert kept.next()[1] == "raised", "the other key's stream goes on"
            assert revoked.drain(1.0) == []
        print(f"revoked stream closed {closed_after:.1f} s after the revoke (key cache 1 s, poll 2 s)")
        assert closed_after < 10
        assert httpx.get(url, headers=desk).status_code == 401


def test_the_page_and_the_api_cannot_be_framed_sniffed_or_cached(api: ApiServer) -> None:
    raise_alert(api.database_url, snapshot=JPEG)
    page = httpx.get(f"{api.url}/")
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'sha256-" in policy and "'unsafe-inline'" not in policy
    fire = api.key("fire")
    event_id = httpx.get(f"{api.url}/api/v1/alerts", headers=fire).json()["items"][0]["last_event_id"]
    for response in (
        page,
        httpx.get(f"{api.url}/api/v1/alerts", headers=fire),
        httpx.get(f"{api.url}/api/v1/events/{event_id}/snapshot", headers=fire),
        httpx.get(f"{api.url}/api/v1/alerts"),  # 401
    ):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    for response in (httpx.get(f"{api.url}/api/v1/alerts", headers=fire),
                     httpx.get(f"{api.url}/api/v1/events/{event_id}/snapshot", headers=fire)):  # fmt: skip
        assert response.headers["cache-control"] == "no-store"


INWARD = [
    "http://127.0.0.1/", "http://localhost:8080/", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/",
    "http://2130706433/", "http://0x7f000001/", "http://017700000001/", "http://127.1/", "http://[::1]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/", "http://10.0.0.1/", "http://192.168.1.1/",
    "http://172.16.0.1/", "http://100.64.0.1/", "http://224.0.0.1/", "http://240.0.0.1/", "http://[fe80::1]/",
    "http://[fd00::1]/", "http://[64:ff9b::7f00:1]/", "http://[2002:7f00:1::]/", "http://ip6-localhost/",
    "http://no-such-host.invalid/",
]  # fmt: skip


def test_webhooks_pointed_inward_are_refused_at_registration(api: ApiServer) -> None:
    admin = api.key("admin")
    for url in INWARD:
        response = httpx.post(f"{api.url}/api/v1/webhooks", headers=admin, json={"url": url, "role": "fire"})
        assert response.status_code == 422, (url, response.text)
        assert "PATROLNET_WEBHOOK_ALLOW" in ErrorBody.model_validate(response.json()).detail
    assert httpx.get(f"{api.url}/api/v1/webhooks", headers=admin).json() == []


class Redirector(http.server.BaseHTTPRequestHandler):
    """Sends every POST elsewhere with a 307; counts what reaches /elsewhere."""

    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        Redirector.hits.append(self.path)
        self.send_response(307)
        self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Redirector.hits = []
    yield server.server_port
    server.shutdown()


def _hook(api: ApiServer, admin: dict[str, str], url: str) -> str:
    response = httpx.post(f"{api.url}/api/v1/webhooks", headers=admin, json={"url": url, "role": "fire"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_webhook_delivery_checks_again_follows_no_redirect_and_hides_ports(
    database_url: str, monkeypatch: pytest.MonkeyPatch, receiver: int
) -> None:
    monkeypatch.setenv("PATROLNET_WEBHOOK_ALLOW", "127.0.0.1")
    api = ApiServer(database_url)
    with api, socket.socket() as listening:
        admin = api.key("admin")
        listening.bind(("127.0.0.1", 0))
        listening.listen()  # open, but never speaks HTTP
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        hooks = {
            "redirect": _hook(api, admin, f"http://127.0.0.1:{receiver}/hook"),
            "open": _hook(api, admin, f"http://127.0.0.1:{listening.getsockname()[1]}/"),
            "closed": _hook(api, admin, f"http://127.0.0.1:{closed_port}/"),
        }
        with psycopg.connect(database_url, autocommit=True) as conn:  # a row no registration would accept
            conn.execute("INSERT INTO webhooks (id, url, secret, kinds, created_by) VALUES (%s, %s, '', %s, 'x')",
                         (uuid4(), "http://[::1", ["fire"]))  # fmt: skip
        raise_alert(database_url)

        def deliveries(name: str) -> list[dict]:
            path = f"/api/v1/webhooks/{hooks[name]}/deliveries"
            return httpx.get(f"{api.url}{path}", headers=admin).json()

        # The API allowed loopback; a dispatcher that does not allow it refuses at delivery, after resolving.
        strict = WebhookDispatcher(database_url, allow="", timeout_s=1.0)
        assert strict.run_once() == 4
        assert Redirector.hits == []
        assert deliveries("redirect")[0]["last_error"] == "target refused: 127.0.0.1 is not a public address"

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE webhook_deliveries SET next_at = now()")
        dispatcher = WebhookDispatcher(database_url, allow="127.0.0.1", timeout_s=1.0, poll_s=0.05)
        dispatcher.start()
        try:
            eventually(lambda: all(deliveries(n)[0]["attempts"] == 2 for n in hooks), timeout=20)
        finally:
            dispatcher.stop()
        assert Redirector.hits == ["/hook"], "the redirect was not followed"
        [redirected] = deliveries("redirect")
        assert (redirected["state"], redirected["last_status"]) == ("pending", 307)
        assert "redirects are not followed" in redirected["last_error"]
        open_port, closed_port_log = deliveries("open")[0], deliveries("closed")[0]
        assert (open_port["last_status"], open_port["last_error"]) == (None, NO_RESPONSE)
        assert (closed_port_log["last_status"], closed_port_log["last_error"]) == (None, NO_RESPONSE)
        assert dispatcher.counts["errors"] == 0, "the malformed row failed its delivery, not the dispatcher"


def test_a_security_alert_is_not_a_fire_desks_even_in_hourly_counts(api: ApiServer) -> None:
    raise_alert(api.database_url, kind=EventKind.SECURITY)
    raise_alert(api.database_url, kind=EventKind.FIRE)
    counts = httpx.get(f"{api.url}/api/v1/stats/hourly", headers=api.key("fire")).json()
    assert [(c["kind"], c["place"], c["events"]) for c in counts] == [("fire", EAST.model_dump(exclude={"device"}), 1)]
