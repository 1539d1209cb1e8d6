"""The alert page in Chinese, in headless Chromium: a person whose language is zh-CN signs in and reads the page
in Chinese, times in Shanghai's; a new fire alarm sounds (the page's audio state) and flashes until someone
acknowledges it, on the page or at another desk; the chart shows each grid's alarms per day.

``PATROLNET_PAGE_SCREENSHOT=docs/page-zh.png`` also saves a screenshot of the Chinese page (the README's); a
CJK font must be installed for it (Debian: fonts-wqy-microhei).
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from api_helpers import EAST, WEST, Browser, add_person, raise_alert, session_headers, sign_in
from conftest import ApiServer

from alerts.core.models import Alert

NOW = datetime.now(UTC)


def row_of(alert: Alert) -> str:
    return f"document.querySelector('[data-open=\"{alert.id}\"]')?.closest('tr')"


def past_weeks(api: ApiServer, key: dict[str, str]) -> None:
    """Alarms of the past days in two grid cells, each taken up some seconds after it was raised (the trail's
    time set back to then), a few of them false alarms: the chart's data."""
    taken: list[tuple[datetime, str]] = []
    for day in range(1, 7):
        for n in range(day % 3 + 1):
            ts = NOW - timedelta(days=day, minutes=n * 7)
            _, alert = raise_alert(api.database_url, place=WEST if n == 2 else EAST, ts=ts, type="smoke")
            action = "false-alarm" if (day + n) % 4 == 0 else "acknowledge"
            assert httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/{action}", headers=key).status_code == 200
            taken.append((ts + timedelta(seconds=40 + 25 * day + 30 * n), str(alert.id)))
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.cursor().executemany("UPDATE alert_history SET at = %s WHERE alert_id = %s", taken)


def screenshot(page: Browser, path: str) -> None:
    page.send("Emulation.setDeviceMetricsOverride", width=1280, height=820, deviceScaleFactor=1, mobile=False)
    shot = page.send("Page.captureScreenshot", format="png")
    Path(path).write_bytes(base64.b64decode(shot["data"]))


def test_a_person_reads_the_page_in_chinese_and_hears_a_fire_alarm_until_it_is_acknowledged(api: ApiServer) -> None:
    fire_key = api.key("fire")
    add_person(api, api.key("admin"), "desk.zh", "fire", name="王芳")
    chosen = httpx.put(
        f"{api.url}/api/v1/me/language", headers=session_headers(sign_in(api, "desk.zh")), json={"language": "zh-CN"}
    )
    assert chosen.status_code == 200
    # 16:30 UTC on 1 May is 00:30 on 2 May in Shanghai.
    _, old = raise_alert(api.database_url, ts=datetime(2024, 5, 1, 16, 30, tzinfo=UTC), type="smoke")
    assert httpx.post(f"{api.url}/api/v1/alerts/{old.id}/acknowledge", headers=fire_key).status_code == 200
    past_weeks(api, fire_key)

    with Browser() as page:
        page.open(f"{api.url}/")
        assert page.js("document.getElementById('status').textContent") == "not signed in", "the browser's: en-US"
        page.sign_in("desk.zh")
        page.wait("document.getElementById('status')?.dataset.state === 'live'")
        page.wait("document.querySelectorAll('#stats rect.alarms').length >= 6")
        assert page.js("document.body.dataset.alarmSound") == "stopped", "nothing waits to be acknowledged"
        dom = page.dom()
        assert page.js("document.documentElement.lang") == "zh-CN"
        assert page.js("document.getElementById('status').textContent") == "实时"
        assert "patrolnet 告警" in dom and "王芳 (消防)" in dom and "发生时间" in dom
        assert "烟雾：smoke-1" in dom and "已确认" in dom, "title and status in Chinese"
        assert "2024/05/02 00:30:00" in dom, "times in Asia/Shanghai"
        assert "east-gate / g07" in dom and "west-lake / g02" in dom, "a chart per grid cell"

        _, fire = raise_alert(api.database_url, type="smoke", severity="critical", title="Smoke alarm at Building 3")
        page.wait(f"{row_of(fire)}?.classList.contains('alarming')")
        page.wait("document.body.dataset.alarmSound === 'playing'")
        assert page.js("document.getElementById('sound-hint').style.display") == "none"
        if path := os.environ.get("PATROLNET_PAGE_SCREENSHOT"):
            screenshot(page, path)
        page.js(f"document.querySelector('button[data-id=\"{fire.id}\"][data-action=acknowledge]').click()")
        page.wait("document.body.dataset.alarmSound === 'stopped'")
        assert not page.js(f"{row_of(fire)}.classList.contains('alarming')"), "the flashing stops too"
        page.js(f"document.querySelector('[data-open=\"{fire.id}\"]').click()")
        page.wait("document.getElementById('trail')?.textContent.includes('王芳: 确认')")

        # Acknowledged at another desk: the stream tells the page, which falls silent.
        _, second = raise_alert(api.database_url, type="heat", severity="critical")
        page.wait("document.body.dataset.alarmSound === 'playing'")
        assert httpx.post(f"{api.url}/api/v1/alerts/{second.id}/acknowledge", headers=fire_key).status_code == 200
        page.wait("document.body.dataset.alarmSound === 'stopped'")

        # The switch on the page: English at once, and kept with the person.
        page.js("(s => { s.value = 'en'; s.dispatchEvent(new Event('change')); })(document.getElementById('lang'))")
        page.wait("document.getElementById('status').textContent === 'live'")
        assert "Smoke alarm at Building 3" in page.dom()
    person = httpx.get(f"{api.url}/api/v1/people", headers=api.key("admin")).json()
    assert [p["language"] for p in person if p["login"] == "desk.zh"] == ["en"]
    history = httpx.get(f"{api.url}/api/v1/alerts/{fire.id}", headers=api.key("admin")).json()["history"]
    assert [(h["actor"], h["action"]) for h in history] == [("王芳", "acknowledge")]
