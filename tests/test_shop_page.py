"""A shop's phone page: the shop opens its link (``/shop#<key>``) in a phone-sized headless Chromium, sees that its
shop is on duty this week, checks in a patrol with a photo from the camera (its EXIF and GPS gone by the time the
community officer reads it), is told why a file that is no picture is refused, and opens the page again from the
reminder's plain ``/shop`` link. Through the API: a shop's own page, a new key that ends the old one."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from api_helpers import Browser, get, image_bytes
from conftest import ApiServer, eventually
from PIL import Image
from test_phone_reports import PHONE_UA
from test_shops import EAST, monday_in_shanghai, officer, register


@pytest.fixture
def shop_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    monkeypatch.setenv("PATROLNET_KEY_CACHE_S", "0.2")  # a replaced key stops at once
    with ApiServer(database_url) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tagged_photo() -> bytes:
    """A phone's JPEG that says which camera took it and where (GPS)."""
    exif = Image.Exif()
    exif[0x010F] = "LeakyCam"
    exif[0x8825] = {1: "N", 2: (31.0, 14.0, 3.0), 3: "E", 4: (121.0, 28.0, 1.0)}
    photo = image_bytes("JPEG", (2400, 1800), exif=exif)
    assert b"LeakyCam" in photo and Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)
    return photo


def test_a_shop_on_duty_checks_in_with_a_photo_from_its_phone_page(shop_api: ApiServer, tmp_path: Path) -> None:
    api = shop_api
    headers, _ = officer(api)
    tea = register(api, headers, "Tea shop", address="3 Elm Row")
    register(api, headers, "Noodle bar")
    assert tea["url"] == f"/shop#{tea['key']}" and tea["qr_svg"] is None  # relative without PATROLNET_PUBLIC_URL
    shot, text = tmp_path / "IMG_0001.jpg", tmp_path / "notes.jpg"
    shot.write_bytes(tagged_photo())
    text.write_bytes(b"a shopping list, named like a photo")
    monday = monday_in_shanghai()

    with Browser() as phone:
        phone.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=3, mobile=True)
        phone.send("Emulation.setUserAgentOverride", userAgent=PHONE_UA)
        phone.send("Page.navigate", url=f"{api.url}{tea['url']}")
        phone.wait("document.querySelectorAll('#duty li').length === 2")
        assert phone.js("innerWidth") == 390
        assert phone.js("document.getElementById('who').textContent") == "Tea shop · 3 Elm Row · east-gate"
        duty = phone.js("[...document.querySelectorAll('#duty li')].map(li => [li.className, li.textContent])")
        following = monday + timedelta(weeks=1)
        assert duty == [["mine", f"本周 This week ({monday}): 本店值班 your shop is on duty"],
                        ["other", f"下周 Next week ({following}): Noodle bar 值班 on duty"]]  # fmt: skip
        assert phone.js("document.getElementById('next-turn').textContent").startswith("本店下次值班 Your next turn: ")
        # The key left the address bar and stays on the phone.
        assert phone.js("[location.href.includes('#'), localStorage.getItem('patrolnet-shop-key')]") == [
            False, tea["key"]]  # fmt: skip
        assert phone.js("document.getElementById('at').value")  # now, for a patrol just done

        phone.js("document.getElementById('note').value = 'Round the courtyard, gate locked'")
        picker = phone.send("Runtime.evaluate", expression="document.getElementById('photo')")["result"]["objectId"]
        phone.send("DOM.setFileInputFiles", files=[str(shot)], objectId=picker)
        phone.wait("!document.getElementById('preview').hidden")
        phone.js("document.getElementById('send').click()")
        phone.wait("document.getElementById('result').textContent === '已签到 Checked in'", timeout=20)
        shown = phone.wait("document.querySelector('#checkins li[data-checkin]')?.textContent")
        assert shown.endswith(" · 有照片 photoRound the courtyard, gate locked"), shown

        # A file that is no picture: refused, and the phone says why.
        phone.send("DOM.setFileInputFiles", files=[str(text)], objectId=picker)
        phone.wait("!document.getElementById('preview').hidden")
        phone.js("document.getElementById('send').click()")
        said = phone.wait("document.getElementById('result').className === 'error' &&"
                          " document.getElementById('result').textContent")  # fmt: skip
        assert said == "photo: not a JPEG, PNG or WebP picture", said
        assert phone.js("document.querySelectorAll('#checkins li[data-checkin]').length") == 1

        # The reminder's link names no key: the phone that opened the shop's link opens its page from it.
        phone.send("Page.navigate", url="about:blank")
        phone.wait("location.href === 'about:blank'")
        phone.send("Page.navigate", url=f"{api.url}/shop")
        phone.wait("document.getElementById('who')?.textContent.startsWith('Tea shop')")

    # The community officer reads the check-in: the photo written again, a JPEG with no EXIF, GPS or camera.
    [checkin] = get(api, f"/api/v1/shops/{tea['shop']['id']}/checkins", headers).json()
    assert (checkin["note"], checkin["photo"]) == ("Round the courtyard, gate locked", True)
    photo = get(api, f"/api/v1/shops/checkins/{checkin['id']}/photo", headers)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert b"LeakyCam" not in photo.content and b"Exif" not in photo.content
    kept = Image.open(io.BytesIO(photo.content))
    assert (kept.format, kept.size, dict(kept.getexif())) == ("JPEG", (1600, 1200), {})


def test_a_shops_own_page_and_a_new_key_that_ends_the_old_one(shop_api: ApiServer) -> None:
    api = shop_api
    headers, _ = officer(api)
    tea = register(api, headers, "Tea shop")
    noodle = register(api, headers, "Noodle bar")
    me = get(api, "/api/v1/shops/me", bearer(noodle["key"]))
    assert me.status_code == 200, me.text
    page = me.json()
    monday = monday_in_shanghai()
    assert (page["shop"]["name"], page["this_week"]["shop"]["name"], page["next_week"]["shop"]["name"]) == (
        "Noodle bar", "Tea shop", "Noodle bar")  # fmt: skip
    # Two shops take turns: the Noodle bar has every other week, from next week on, for a year.
    weeks = [date.fromisoformat(w) for w in page["my_weeks"]]
    assert weeks[:3] == [monday + timedelta(weeks=k) for k in (1, 3, 5)] and len(weeks) == 26
    assert page["checkins"] == []

    sent = httpx.post(f"{api.url}/api/v1/shops/checkins", headers=bearer(noodle["key"]), data={"note": "dusk round"},
                      files={"photo": ("round.txt", b"not a picture at all", "image/jpeg")})  # fmt: skip
    assert sent.status_code == 415 and sent.json()["detail"] == "photo: not a JPEG, PNG or WebP picture", sent.text
    assert get(api, "/api/v1/shops/me", bearer(noodle["key"])).json()["checkins"] == []  # nothing kept of it

    reporter = httpx.post(f"{api.url}/api/v1/reporters", headers=api.key("admin"),
                          json={**EAST, "grid": "g07", "site": "elm-row", "name": "Corner shop"})  # fmt: skip
    not_a_shop = get(api, "/api/v1/shops/me", bearer(reporter.json()["key"]))
    assert not_a_shop.status_code == 403 and "not a shop" in not_a_shop.text
    assert get(api, "/api/v1/shops/me", headers).status_code == 403  # the officer is no shop

    # The Tea shop lost its phone: the officer gives it a new key; the old one stops.
    west = api.key("police", sub_district="lakeside", community="west-lake")
    assert httpx.post(f"{api.url}/api/v1/shops/{tea['shop']['id']}/key", headers=west).status_code == 404
    renewed = httpx.post(f"{api.url}/api/v1/shops/{tea['shop']['id']}/key", headers=headers)
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()
    assert new["key"] != tea["key"] and new["url"] == f"/shop#{new['key']}"
    eventually(lambda: get(api, "/api/v1/shops/me", bearer(tea["key"])).status_code == 401)
    assert get(api, "/api/v1/shops/me", bearer(new["key"])).json()["shop"]["id"] == tea["shop"]["id"]
    assert httpx.get(f"{api.url}/shop").headers["content-security-policy"].startswith("default-src 'none'")
