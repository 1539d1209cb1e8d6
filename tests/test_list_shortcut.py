"""The alert list's short way (``alerts.api.list_shortcut``) on a real database: the same bytes as the route for
the plain case, and for everything else the route's own answer, refusals included."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_helpers import WEST, raise_alert

from alerts.api import routes_alerts, routes_cap
from alerts.api.app import create_app
from alerts.api.list_shortcut import AlertListShortcut
from alerts.auth import Principal, create_key
from alerts.core.models import EventKind
from deploy.local.services import ApiThread


@pytest.fixture
def both(database_url: str) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two APIs on one database: as shipped, and without the short way (every request to the route)."""
    plain = create_app(database_url)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not AlertListShortcut]
    with (
        ApiThread(database_url) as a,
        ApiThread(database_url, plain) as b,
        httpx.Client(base_url=a.url) as short,
        httpx.Client(base_url=b.url) as routed,
    ):
        yield short, routed


def key(database_url: str, role: str, **scope: str) -> dict[str, str]:
    principal = Principal.model_validate({"name": f"test {role}", "role": role, **scope})
    return {"Authorization": f"Bearer {create_key(database_url, principal)}"}


# What only the route calls, not the short way: counted, to tell which answered.
ROUTE_ONLY = {"/api/v1/alerts": (routes_alerts, "alerts_page_json"), "/api/v1/alerts.cap": (routes_cap, "before_of")}


@pytest.mark.parametrize("path", ROUTE_ONLY)
def test_the_short_way_answers_what_the_route_answers(
    both: tuple[httpx.Client, httpx.Client], database_url: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    for i in range(5):
        raise_alert(database_url, ts=t0 + timedelta(minutes=i), readings={"smoke": 1.0, "temperature": 40.0 + i})
    raise_alert(database_url, place=WEST, ts=t0 + timedelta(minutes=10))
    raise_alert(database_url, kind=EventKind.SECURITY, ts=t0 + timedelta(minutes=11))
    routed: list[Any] = []
    module, name = ROUTE_ONLY[path]
    original = getattr(module, name)

    def counted(*args: Any) -> Any:
        routed.append(args)
        return original(*args)

    monkeypatch.setattr(module, name, counted)
    fire, police = key(database_url, "fire"), key(database_url, "police", community="east-gate")
    by_header = {"X-API-Key": police["Authorization"].removeprefix("Bearer ")}
    short, plain = both
    first = short.get("/api/v1/alerts", params={"limit": 2}, headers=fire).json()
    plain_cases = [
        ({}, fire),
        ({}, police),
        ({"limit": 2}, fire),
        ({"limit": 2, "cursor": first["next_cursor"]}, fire),
        ({"community": "west-lake", "kind": ["fire"], "active": "true"}, fire),
        ({"since": t0.isoformat(), "until": (t0 + timedelta(minutes=3)).isoformat()}, fire),
        ({"status": ["new", "acknowledged"], "severity": ["major", "critical"]}, by_header),
    ]  # fmt: skip
    routed.clear()
    for params, headers in plain_cases:
        a, b = (
            short.get(path, params=params, headers=headers),
            plain.get(path, params=params, headers=headers),
        )
        assert a.status_code == b.status_code == 200, (params, a.text, b.text)
        assert a.content == b.content, params
        assert {**a.headers, "date": ""} == {**b.headers, "date": ""}, params
        assert b"<entry>" in a.content or a.json()["items"], f"an empty page proves nothing: {params}"
    assert len(routed) == len(plain_cases), "only the app without the short way went to the route"

    refused: list[tuple[dict[str, Any], dict[str, str], int | None]] = [
        ({"limit": 0}, fire, 422),
        ({"unknown": "1"}, fire, 422),
        ({"cursor": "not-a-cursor"}, fire, 400),
        ({"kind": ["security"]}, fire, 403),
        ({"since": "yesterday"}, fire, 422),
        ({}, {}, 401),
        ({}, {"Authorization": "Bearer not-a-key"}, 401),
        ({}, key(database_url, "reporter"), 403),
        ({"limit": ["1", "2"]}, fire, None),
    ]
    for params, headers, status in refused:
        a = short.get(path, params=params, headers=headers)
        b = plain.get(path, params=params, headers=headers)
        assert a.status_code == b.status_code and a.content == b.content, (params, a.text, b.text)
        assert status is None or a.status_code == status, (params, a.text)
    metrics = short.get("/metrics", headers=key(database_url, "operator")).text
    assert f'route="{path}",status="200"' in metrics, "counted under the route's template"
