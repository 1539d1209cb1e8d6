"""The alert page in a real browser: headless Chromium, driven over its DevTools protocol, runs the page's
JavaScript against the real API; a person signs in on the page as a desk does, and the test reads what they see.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from api_helpers import EAST, raise_alert, signed_in_page, write
from conftest import ApiServer

from alerts.auth import SESSION_COOKIE
from alerts.core.models import DeviceStatus, EventKind, Heartbeat, NodeStatus, Place, Severity
from alerts.intake.watchdog import offline_batch
from alerts.store.database import WriteBatch


def test_the_fire_desk_sees_its_alarm_and_its_devices_but_no_police_alert(api: ApiServer) -> None:
    _, fire = raise_alert(
        api.database_url, EventKind.FIRE, title="Smoke alarm at Building 3, stairwell", severity=Severity.CRITICAL
    )
    raise_alert(api.database_url, EventKind.SECURITY, EAST.with_device("cam-1"), title="Intrusion: person in walkway")
    site = Place(**EAST.model_dump(exclude={"device"}))
    beat = Heartbeat(
        node_id="node-1",
        place=site,
        started_at=datetime.now(UTC),
        devices=[
            DeviceStatus(device="smoke-1", type="zigbee2mqtt", online=True, detail={"battery": 87}),
            DeviceStatus(device="cam-1", type="camera", online=False, detail={"fps": 0.0}),
        ],
    )
    write(api.database_url, WriteBatch(heartbeats=[beat]))

    # The page runs under its Content-Security-Policy: inline code only by hash, nothing from elsewhere.
    policy = httpx.get(f"{api.url}/").headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
    with signed_in_page(api, "fire", f"/#open={fire.id}") as page:
        page.wait("document.querySelectorAll('#devices .device:not(.node)').length === 2")
        page.wait("!!document.getElementById('trail')")
        dom = page.dom()

    assert "Desk-Fire Person (fire)" in dom, "signed in as the person"
    assert re.findall(r'data-open="([0-9a-f-]{36})"', dom) == [str(fire.id)], "one alert row: the fire desk's own"
    assert "Smoke alarm at Building 3, stairwell" in dom and "Intrusion" not in dom
    assert '<span class="sev critical">critical</span>' in dom
    assert "willow-court/smoke-1 87%" in dom and 'class="device down"' in dom, "device chips, the camera down"
    assert f'<span class="place">{fire.id}</span>' in dom, "the alert named after #open= is open"


def test_a_node_the_watchdog_holds_offline_shows_a_red_chip_and_a_live_node_a_green_one(api: ApiServer) -> None:
    site = Place(**EAST.model_dump(exclude={"device"}))
    now = datetime.now(UTC)
    beats = [Heartbeat(node_id=node, place=site, started_at=now) for node in ("node-up", "node-gone")]
    write(api.database_url, WriteBatch(heartbeats=beats))
    # The will arrives after the heartbeat, then the watchdog's round raises node_offline.
    write(api.database_url, WriteBatch(statuses=[NodeStatus(node_id="node-gone", place=site, online=False)]))
    write(api.database_url, offline_batch(site, "node-gone", now, "last will"))
    with signed_in_page(api, "fire") as page:
        page.wait("document.querySelectorAll('#devices .node').length === 2")
        dom = page.dom()

    chip = r'<span class="device node ([a-z]*)"[^>]*><span class="dot"></span>node ([^<]+)</span>'
    chips = {label: classes for classes, label in re.findall(chip, dom)}
    assert chips == {"node-up": "", "node-gone offline": "down"}, "the vanished node red, the other not"


def test_a_person_signs_in_acknowledges_an_alert_and_finds_their_name_in_its_trail(api: ApiServer) -> None:
    _, fire = raise_alert(api.database_url, EventKind.FIRE, title="Smoke alarm, boiler room")
    with signed_in_page(api, "fire") as page:
        # The session cookie as Chromium keeps it over http://127.0.0.1: __Host-, Secure, HttpOnly, SameSite=Strict.
        cookies = page.send("Network.getCookies", urls=[api.url])["cookies"]
        assert [(c["name"], c["secure"], c["httpOnly"], c["sameSite"], c["path"]) for c in cookies] == [
            (SESSION_COOKIE, True, True, "Strict", "/")
        ]
        assert page.js("document.cookie") == "", "no script reads the session token"
        assert page.js(f"document.querySelector('[data-open=\"{fire.id}\"]').textContent") == "Smoke alarm, boiler room"

        page.js(f"document.querySelector('button[data-id=\"{fire.id}\"][data-action=acknowledge]').click()")
        page.wait("document.getElementById('rows').textContent.includes('acknowledged')")
        page.js(f"document.querySelector('[data-open=\"{fire.id}\"]').click()")
        trail = page.wait("document.getElementById('trail')?.textContent")
        assert "Desk-Fire Person: acknowledge" in trail

        # A reload keeps the session (the page asks for its CSRF token again); signing out ends it.
        page.send("Page.reload")
        page.wait("document.getElementById('status')?.textContent === 'live'")
        page.js("document.getElementById('signout').click()")
        page.wait("document.getElementById('status')?.textContent === 'not signed in'")
        assert page.js("fetch('/api/v1/alerts').then(r => r.status)") == 401
    history = httpx.get(f"{api.url}/api/v1/alerts/{fire.id}", headers=api.key("admin")).json()["history"]
    assert [(h["actor"], h["action"], h["person_id"] is not None) for h in history] == [
        ("Desk-Fire Person", "acknowledge", True)
    ]
