"""The statistics behind the page's chart, and a person's language: per grid cell and Shanghai day, the alarms,
false alarms and how long desks took to take them up; the language a person chooses for the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from api_helpers import EAST, WEST, add_person, get, raise_alert, session_headers, sign_in
from conftest import ApiServer

from alerts.core.models import EventKind

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_alarms_per_grid_and_shanghai_day_with_false_alarms_and_time_to_take_up(api: ApiServer) -> None:
    now = datetime.now(UTC)
    raised = now - timedelta(seconds=200)
    _, acknowledged = raise_alert(api.database_url, ts=raised)
    _, false_alarm = raise_alert(api.database_url, ts=raised)
    raise_alert(api.database_url, place=WEST, ts=raised)
    raise_alert(api.database_url, ts=now - timedelta(days=20))  # before the 14 days
    raise_alert(api.database_url, EventKind.SECURITY, EAST.with_device("cam-1"), ts=raised)  # not the fire desk's
    # 00:30 in Shanghai two days ago is 16:30 UTC the day before: the alarm counts on the Shanghai day.
    before = now.astimezone(SHANGHAI).date() - timedelta(days=2)
    raise_alert(api.database_url, ts=datetime(before.year, before.month, before.day, 0, 30, tzinfo=SHANGHAI))
    fire = api.key("fire")
    assert httpx.post(f"{api.url}/api/v1/alerts/{acknowledged.id}/acknowledge", headers=fire).status_code == 200
    assert httpx.post(f"{api.url}/api/v1/alerts/{false_alarm.id}/false-alarm", headers=fire).status_code == 200

    rows = get(api, "/api/v1/stats/grids", fire, days=14).json()
    day = str(raised.astimezone(SHANGHAI).date())
    by_key = {(r["day"], r["community"], r["grid"]): r for r in rows}
    assert set(by_key) == {(str(before), "east-gate", "g07"), (day, "east-gate", "g07"), (day, "west-lake", "g02")}
    east = by_key[(day, "east-gate", "g07")]
    assert (east["alarms"], east["false_alarms"], east["acknowledged"]) == (2, 1, 2)
    # Both taken up about 200 s after they were raised (the requests took a little more).
    assert 200 <= east["ack_median_s"] < 260 and 200 <= east["ack_mean_s"] < 260
    assert by_key[(str(before), "east-gate", "g07")]["alarms"] == 1
    west = by_key[(day, "west-lake", "g02")]
    assert (west["alarms"], west["acknowledged"], west["ack_median_s"]) == (1, 0, None), "none taken up yet"

    scoped = get(api, "/api/v1/stats/grids", api.key("fire", community="west-lake")).json()
    assert [(r["community"], r["alarms"]) for r in scoped] == [("west-lake", 1)], "only the key's places"
    police = get(api, "/api/v1/stats/grids", api.key("police")).json()
    assert [(r["grid"], r["alarms"]) for r in police] == [("g07", 1)], "only the police desk's kinds"
    assert get(api, "/api/v1/stats/grids", fire, days=0).status_code == 422
    assert get(api, "/api/v1/stats/grids", fire, kind="security").status_code == 403


def test_a_person_sets_their_language_and_the_session_tells_the_page(api: ApiServer) -> None:
    add_person(api, api.key("admin"), "desk.zh", "fire")
    signed = sign_in(api, "desk.zh")
    assert signed.json()["person"]["language"] is None, "unset: the page follows the browser"
    headers = session_headers(signed)
    changed = httpx.put(f"{api.url}/api/v1/me/language", headers=headers, json={"language": "zh-CN"})
    assert changed.status_code == 200 and changed.json()["language"] == "zh-CN"
    assert httpx.get(f"{api.url}/api/v1/session", headers=headers).json()["person"]["language"] == "zh-CN"
    assert sign_in(api, "desk.zh").json()["person"]["language"] == "zh-CN", "kept for the next sign-in"

    refused = httpx.put(f"{api.url}/api/v1/me/language", headers=headers, json={"language": "fr"})
    assert refused.status_code == 422
    no_csrf = session_headers(signed, csrf=False)
    assert httpx.put(f"{api.url}/api/v1/me/language", headers=no_csrf, json={"language": "en"}).status_code == 403
    keyed = httpx.put(f"{api.url}/api/v1/me/language", headers=api.key("fire"), json={"language": "en"})
    assert keyed.status_code == 400, "a key has no language of its own"

    wording = httpx.get(f"{api.url}/api/v1/wording", headers=headers).json()
    assert wording["timezone"] == "Asia/Shanghai" and wording["languages"] == ["zh-CN", "en"]
    assert wording["tables"]["types"]["smoke"] == ["烟雾", "smoke"]
    assert httpx.get(f"{api.url}/api/v1/wording").status_code == 401
