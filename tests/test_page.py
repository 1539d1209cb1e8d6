"""The alert page in a real browser: headless Chromium runs its JavaScript against the real API.

``--dump-dom`` prints the document once the page's scripts have run, so the test reads what a desk sees.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from api_helpers import EAST, page_dom, raise_alert, write
from conftest import ApiServer

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
    key = api.key("fire")["Authorization"].split()[1]

    # The page runs under its Content-Security-Policy: inline code only by hash, nothing from elsewhere.
    policy = httpx.get(f"{api.url}/").headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
    dom = page_dom(f"{api.url}/#key={key}&open={fire.id}")

    assert "demo" not in dom and "test fire (fire)" in dom, "the page connected with the key from the address"
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
    key = api.key("fire")["Authorization"].split()[1]

    dom = page_dom(f"{api.url}/#key={key}")

    chip = r'<span class="device node ([a-z]*)"[^>]*><span class="dot"></span>node ([^<]+)</span>'
    chips = {label: classes for classes, label in re.findall(chip, dom)}
    assert chips == {"node-up": "", "node-gone offline": "down"}, "the vanished node red, the other not"
