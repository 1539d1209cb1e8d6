"""Helpers of the alert API tests: places, a picture, alerts stored as ingest stores them, requests and SSE reads."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from datetime import UTC, datetime

import httpx
import psycopg
from conftest import ApiServer, sse_messages

from alerts.core.models import Alert, Event, EventKind, Place
from alerts.core.policy import AlertPolicy
from alerts.store.database import WriteBatch, write_batch

EAST = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court", device="smoke-1")
WEST = Place(sub_district="lakeside", community="west-lake", grid="g02", site="pine-yard", device="cam-2")
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


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
]  # fmt: skip


def page_dom(url: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [*CHROMIUM, f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--dump-dom", url],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    return result.stdout
