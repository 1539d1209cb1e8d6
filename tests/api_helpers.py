"""Helpers of the alert API tests: places, a picture, alerts stored as ingest stores them, requests and SSE reads."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from conftest import ApiServer, sse_messages
from PIL import Image
from websockets.sync.client import connect as ws_connect

from alerts.auth import SESSION_COOKIE
from alerts.core.models import Alert, Event, EventKind, Place
from alerts.core.policy import AlertPolicy
from alerts.store.database import WriteBatch, write_batch
from deploy.local.services import free_port

EAST = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")
WEST = Place(sub_district="lakeside", community="west-lake", grid="g02", site="pine-yard", device="cam-2")
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def image_bytes(kind: str = "JPEG", size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """A real picture (a colour gradient) encoded as ``kind`` by Pillow, ``save`` its options (``exif=`` ...)."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    image.save(out, kind, **save)
    return out.getvalue()


def write(database_url: str, batch: WriteBatch) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        write_batch(conn, batch)


def raise_alert(
    database_url: str,
    kind: EventKind = EventKind.FIRE,
    place: Place = EAST,
    ts: datetime | None = None,
    snapshot: bytes | None = None,
    **fields,
) -> tuple[Event, Alert]:
    """An event and the new alert it raises, stored as ingest would store them."""
    event = Event(
        kind=kind,
        type=fields.pop("type", kind.value),
        place=place,
        source="node-1",
        ts=ts or datetime.now(UTC),
        snapshot=snapshot,
        **fields,
    )
    alert = AlertPolicy().apply(event)
    assert alert is not None, "a new event raises an alert"
    write(database_url, WriteBatch(events=[event], alerts=[alert]))
    return event, alert


def get(api: ApiServer, path: str, headers: dict[str, str], **params) -> httpx.Response:
    return httpx.get(f"{api.url}{path}", headers=headers, params=params)


def sse_take(
    url: str, headers: dict[str, str], count: int, before_reading=None, quiet_s: float = 5.0
) -> list[tuple[str, str, dict]]:
    """The first ``count`` SSE messages (id, event, data), or fewer if the stream falls quiet for ``quiet_s``.

    Not conftest's SseReader: closing its client from another thread leaves the socket open, and the
    server then waits for the stream at shutdown.
    """
    got: list[tuple[str, str, dict]] = []
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(5.0, read=quiet_s)) as response:
        assert response.status_code == 200, response.read()
        if before_reading is not None:
            before_reading()
        with contextlib.suppress(httpx.ReadTimeout):
            for message in sse_messages(response.iter_lines()):
                got.append(message)
                if len(got) == count:
                    break
    return got


CHROMIUM = [
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",  # the page's alarm sound starts without a click
]  # fmt: skip


PASSWORD = "correct horse battery"


def add_person(api: ApiServer, admin: dict[str, str], login: str, role: str, **fields) -> dict:
    """A person added through the admin route (password ``PASSWORD``); the answer: person and TOTP URI."""
    body = {"login": login, "name": fields.pop("name", f"{login.title()} Person"), "role": role, "password": PASSWORD}
    response = httpx.post(f"{api.url}/api/v1/people", headers=admin, json={**body, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def sign_in(api: ApiServer, login: str, password: str = PASSWORD, code: str = "") -> httpx.Response:
    return httpx.post(f"{api.url}/api/v1/session", json={"login": login, "password": password, "code": code})


def session_headers(response: httpx.Response, csrf: bool = True) -> dict[str, str]:
    """Headers of a signed-in browser from its sign-in answer: the cookie (sent by hand: httpx, like Python's
    cookie jar, keeps a Secure cookie off plain http) and, for changes, the CSRF token."""
    assert response.status_code == 200, response.text
    headers = {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE]}"}
    return headers | ({"X-CSRF-Token": response.json()["csrf_token"]} if csrf else {})


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, type and click, read what it shows."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory()
        self.port = free_port()
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self._process = subprocess.Popen(
            [*CHROMIUM, f"--user-data-dir={self._profile.name}", f"--remote-debugging-port={self.port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def __enter__(self) -> Browser:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                pages = httpx.get(f"http://127.0.0.1:{self.port}/json/list").json()
                if page := next((p for p in pages if p["type"] == "page"), None):
                    break
            assert time.monotonic() < deadline, "Chromium's DevTools did not answer"
            time.sleep(0.1)
        self._ws = self._stack.enter_context(ws_connect(page["webSocketDebuggerUrl"], max_size=None))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self._process.terminate()
        self._process.wait(10)
        # Chromium's helper processes outlive the browser's for a moment and still write into the profile,
        # which then cannot be removed ("Directory not empty"): end its whole process group first.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._profile.cleanup()

    def send(self, method: str, **params: Any) -> dict:
        """A DevTools command's result (the events in between are skipped)."""
        sent = next(self._ids)
        self._ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == sent:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 10.0) -> Any:
        """The expression's value once truthy."""
        deadline = time.monotonic() + timeout
        while not (value := self.js(expression)):
            assert time.monotonic() < deadline, f"still not {expression} after {timeout} s"
            time.sleep(0.1)
        return value

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && !!document.getElementById('signin')")

    def sign_in(self, login: str, password: str = PASSWORD, code: str = "") -> None:
        """Types the login, password and code into the page's sign-in form and clicks Sign in."""
        for field, value in (("login", login), ("password", password), ("code", code)):
            self.js(f"document.getElementById({field!r}).value = {json.dumps(value)}")
        self.js("document.getElementById('signin-button').click()")

    def dom(self) -> str:
        return self.js("document.documentElement.outerHTML")


@contextlib.contextmanager
def signed_in_page(api: ApiServer, role: str, path: str = "/", **scope: str) -> Iterator[Browser]:
    """The page in Chromium, signed in as a new person of ``role`` (an admin adds them), its alerts loaded."""
    login = f"desk-{role.replace('_', '-')}"
    add_person(api, api.key("admin"), login, role, **scope)
    with Browser() as browser:
        browser.open(f"{api.url}{path}")
        browser.sign_in(login)
        browser.wait("document.getElementById('status')?.textContent === 'live'")
        yield browser
