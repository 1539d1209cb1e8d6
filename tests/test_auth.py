"""The authorisation matrix: roles x kinds x places, over every way an alert can be read or touched.

One alert of each kind in each of two communities, each with a snapshot, and readings in both. Each
key must see exactly the alerts of its role's kinds within its places, through the list, one alert,
the stream, the CAP feed and one CAP message, the snapshots and the actions; readings and device
health only within its places; edge and reporter keys read nothing.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import httpx
import pytest
from api_helpers import EAST, JPEG, WEST, get, raise_alert, sse_take, write
from conftest import ApiServer

from alerts.api.cap import NS
from alerts.auth import ROLE_KINDS, Permission, Principal
from alerts.core.models import DeviceStatus, EventKind, Heartbeat, Place, Reading, Role
from alerts.store.database import WriteBatch

SCOPES = [{}, {"community": "east-gate"}, {"sub_district": "lakeside", "site": "pine-yard"}]


def _heartbeat(place: Place) -> Heartbeat:
    """A heartbeat of the place's node saying the place's device is online."""
    assert place.device is not None, "a place with a device"
    return Heartbeat(
        node_id=f"node-{place.site}",
        place=place.model_copy(update={"device": None}),
        started_at=datetime.now(UTC),
        devices=[DeviceStatus(device=place.device, type="camera", online=True)],
    )


@pytest.fixture
def world(api: ApiServer) -> dict:
    """Every kind in every place, as (event, alert) pairs, plus readings and heartbeats in both places."""
    seeded = [
        (place, *raise_alert(api.database_url, kind=kind, place=place, snapshot=JPEG))
        for kind in EventKind
        for place in (EAST, WEST)
    ]
    write(
        api.database_url,
        WriteBatch(
            readings=[Reading(place=p, quantity="temperature", value=20.0) for p in (EAST, WEST)],
            heartbeats=[_heartbeat(p) for p in (EAST, WEST)],
        ),
    )
    return {"alerts": seeded}


@pytest.mark.parametrize("scope", SCOPES, ids=["everywhere", "community", "site"])
@pytest.mark.parametrize("role", [Role.POLICE, Role.FIRE, Role.OPERATOR, Role.ADMIN])
def test_a_desk_sees_its_kinds_in_its_places_and_nothing_else(api: ApiServer, world: dict, role: Role, scope) -> None:
    key = api.key(role, **scope)
    me = Principal(name="me", role=role, **scope)
    visible = {str(a.id) for place, _, a in world["alerts"] if a.kind in ROLE_KINDS[role] and me.covers(place)}
    hidden = [(e, a) for place, e, a in world["alerts"] if str(a.id) not in visible]
    shown = [(e, a) for place, e, a in world["alerts"] if str(a.id) in visible]
    assert visible  # every key in the matrix sees something, so "nothing leaked" is not "nothing works"

    assert {a["id"] for a in get(api, "/api/v1/alerts", key).json()["items"]} == visible
    feed = ET.fromstring(get(api, "/api/v1/alerts.cap", key).content)
    assert {e.findtext("atom:content/cap:alert/cap:incidents", namespaces=NS) for e in feed} - {None} == visible
    replay = sse_take(f"{api.url}/api/v1/alerts/stream", {**key, "Last-Event-ID": "0"}, len(visible) + 1, quiet_s=0.5)
    assert {alert["id"] for _, _, alert in replay} == visible
    for event, alert in shown:
        assert get(api, f"/api/v1/alerts/{alert.id}", key).status_code == 200
        assert get(api, f"/api/v1/alerts/{alert.id}/cap", key).status_code == 200
        assert get(api, f"/api/v1/events/{event.id}/snapshot", key).content == JPEG
    for event, alert in hidden:
        assert get(api, f"/api/v1/alerts/{alert.id}", key).status_code == 404
        assert get(api, f"/api/v1/alerts/{alert.id}/cap", key).status_code == 404
        assert get(api, f"/api/v1/events/{event.id}/snapshot", key).status_code == 404
        assert httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/acknowledge", headers=key).status_code == 404
    _, alert = shown[0]
    assert httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/false-alarm", headers=key).status_code == 200
    for kind in set(EventKind) - set(ROLE_KINDS[role]):
        assert get(api, "/api/v1/alerts", key, kind=kind.value).status_code == 403
        assert get(api, "/api/v1/alerts/stream", key, kind=kind.value).status_code == 403

    for place in (EAST, WEST):
        readings = get(api, f"/api/v1/devices/{place.site}/{place.device}/readings", key)
        if not me.may(Permission.READINGS):
            assert readings.status_code == 403
        else:
            assert len(readings.json()) == (1 if me.covers(place) else 0)
    sites = {d["site"] for d in get(api, "/api/v1/devices", key).json()}
    assert sites == {p.site for p in (EAST, WEST) if me.covers(p)}
    assert {n["place"]["site"] for n in get(api, "/api/v1/nodes", key).json()} == sites
    assert get(api, "/api/v1/duty", key).status_code == (200 if role is Role.ADMIN else 403)
    assert get(api, "/api/v1/webhooks", key).status_code == (200 if role is Role.ADMIN else 403)


@pytest.mark.parametrize("role", [Role.EDGE, Role.REPORTER])
def test_edge_and_reporter_keys_read_nothing(api: ApiServer, world: dict, role: Role) -> None:
    key = api.key(role)
    event, alert = world["alerts"][0][1:]
    for path in [
        "/api/v1/alerts",
        "/api/v1/alerts/stream",
        "/api/v1/alerts.cap",
        f"/api/v1/alerts/{alert.id}",
        f"/api/v1/alerts/{alert.id}/cap",
        f"/api/v1/events/{event.id}/snapshot",
        "/api/v1/devices",
        "/api/v1/nodes",
        "/api/v1/devices/willow-court/smoke-1/readings",
        "/api/v1/stats/hourly",
        "/api/v1/duty",
        "/api/v1/reporters",
        "/api/v1/webhooks",
        "/metrics",
    ]:
        response = get(api, path, key)
        assert response.status_code == 403 and response.json()["detail"], path
    assert httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/acknowledge", headers=key).status_code == 403
    assert get(api, "/api/v1/whoami", key).json()["role"] == role
    if role is Role.EDGE:
        assert httpx.post(f"{api.url}/api/v1/reports", headers=key, data={"text": "x"}).status_code == 403


def test_no_key_or_an_unknown_key_reads_nothing(api: ApiServer, world: dict) -> None:
    assert get(api, "/api/v1/alerts", {}).status_code == 401
    assert get(api, "/api/v1/alerts", {"Authorization": "Basic abc"}).status_code == 401
    assert get(api, "/api/v1/alerts", {"X-API-Key": "pn_guess"}).status_code == 401
    assert get(api, "/healthz", {}).status_code == 200
