"""Reports from a phone: a reporter opens their link in a phone-sized headless Chromium, reports with two photos
from the camera, the police desk's stream carries the report and its photos, the officer replies and the reporter's
page shows the reply. And through the API: the photo limits, EXIF (GPS) gone, a category's desk, links revoked,
replies only by a desk that sees the report, and a reporter reads only their own reports.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest
from api_helpers import Browser, add_person, get, image_bytes, session_headers, sign_in, sse_take
from conftest import REPO, ApiServer, eventually
from PIL import Image

PHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4 Mobile/15E148 Safari/604.1"
)
SITE = {"sub_district": "riverside", "community": "east-gate", "grid": "g07", "site": "willow-court"}


@pytest.fixture
def phone_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    monkeypatch.setenv("PATROLNET_KEY_CACHE_S", "0.2")  # a revoked link stops at once
    with ApiServer(database_url) as server:
        yield server


def register(api: ApiServer, name: str = "Gatehouse Wang") -> str:
    """A reporter registered at willow-court by an admin; its id."""
    made = httpx.post(f"{api.url}/api/v1/reporters", headers=api.key("admin"), json={**SITE, "name": name})
    assert made.status_code == 201, made.text
    return made.json()["reporter"]["id"]


def link(api: ApiServer, reporter_id: str, headers: dict[str, str]) -> dict:
    made = httpx.post(f"{api.url}/api/v1/reporters/{reporter_id}/links", headers=headers)
    assert made.status_code == 201, made.text
    return made.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def report(api: ApiServer, token: str, photos: list[bytes], **form: str) -> httpx.Response:
    files = [("photos", (f"p{n}.jpg", data, "image/jpeg")) for n, data in enumerate(photos)]
    data = {"text": "Someone tries the bike shed's doors", **form}
    return httpx.post(f"{api.url}/api/v1/reports", headers=bearer(token), data=data, files=files or None)


def test_a_reporter_reports_from_a_phone_with_two_photos_and_reads_the_officers_reply(
    phone_api: ApiServer, tmp_path: Path
) -> None:
    api = phone_api
    police = api.key("police", community="east-gate")
    new = link(api, register(api), police)  # the community police make the link
    assert new["url"].startswith("/report#pl_") and new["token"] not in json.dumps(new["link"])
    shots = []
    for n, size in enumerate(((1200, 900), (640, 480)), start=1):
        shots.append(tmp_path / f"IMG_000{n}.jpg")
        shots[-1].write_bytes(image_bytes("JPEG", size))

    with Browser() as phone:
        phone.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=3, mobile=True)
        phone.send("Emulation.setUserAgentOverride", userAgent=PHONE_UA)
        phone.send("Page.navigate", url=f"{api.url}{new['url']}")
        phone.wait("document.querySelectorAll('#category option').length === 8")
        assert phone.js("[innerWidth, navigator.userAgent.includes('iPhone')]") == [390, True]
        assert "Gatehouse Wang" in phone.js("document.getElementById('who').textContent")
        assert phone.js("document.getElementById('category').options[0].textContent") == "可疑人员 Suspicious person"
        phone.js("document.getElementById('category').value = 'suspicious_person'")
        phone.js("document.getElementById('text').value = 'A man tries the bike shed doors'")
        phone.js("document.getElementById('building').value = '5号楼'")
        photos = phone.send("Runtime.evaluate", expression="document.getElementById('photos')")["result"]["objectId"]
        phone.send("DOM.setFileInputFiles", files=[str(p) for p in shots], objectId=photos)
        phone.wait("document.getElementById('photo-count').textContent === '2 / 4'")
        phone.js("document.getElementById('send').click()")
        phone.wait("document.getElementById('result').textContent === '已提交 Sent'", timeout=20)
        phone.wait("document.querySelector('#reports .status')?.textContent === '已受理 received'")

        # The police desk's stream carries the report, with both photos, which the police key fetches.
        stream = f"{api.url}/api/v1/alerts/stream"
        [(seq, change, alert)] = sse_take(stream, {**police, "Last-Event-ID": "0"}, 1, quiet_s=3)
        assert (change, alert["kind"], alert["route"]) == ("raised", "report", "police")
        assert alert["type"] == "suspicious_person"
        assert alert["attributes"]["building"] == "5号楼" and alert["place"]["site"] == "willow-court"
        assert len(alert["attributes"]["photos"]) == 2
        sizes = []
        for url in alert["attributes"]["photos"]:
            fetched = httpx.get(f"{api.url}{url}", headers=police)
            assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
            sizes.append(Image.open(io.BytesIO(fetched.content)).size)
        assert sizes == [(1200, 900), (640, 480)]
        assert httpx.get(f"{api.url}{url}", headers=api.key("police", community="west-lake")).status_code == 404

        # An officer replies, signed in: the trail names them, and the stream tells the desks.
        add_person(api, api.key("admin"), "officer-li", "police", name="Officer Li", community="east-gate")
        officer = session_headers(sign_in(api, "officer-li"))
        said = "We sent a patrol; thank you"
        replied = httpx.post(f"{api.url}/api/v1/reports/{alert['id']}/replies", headers=officer, json={"text": said})
        assert replied.status_code == 201, replied.text
        [(_, change, _)] = sse_take(stream, {**police, "Last-Event-ID": seq}, 1, quiet_s=3)
        assert change == "replied"
        trail = get(api, f"/api/v1/alerts/{alert['id']}", police).json()["history"]
        assert [(h["action"], h["actor"], h["note"]) for h in trail] == [("reply", "Officer Li", said)]

        phone.js("document.getElementById('refresh').click()")
        shown = phone.wait("document.querySelector('#reports .reply')?.textContent")
        assert shown == f"回复 Reply (Officer Li): {said}"


def test_photos_are_limited_cleaned_of_exif_and_a_stall_goes_to_city_management(phone_api: ApiServer) -> None:
    api = phone_api
    token = link(api, register(api), api.key("admin"))["token"]
    photo = image_bytes("JPEG", (32, 24))

    five = report(api, token, [photo] * 5)
    not_a_picture = report(api, token, [b"\xff\xd8\xff\xe0 but a text file after all"])
    unknown = report(api, token, [], category="graffiti")
    assert (five.status_code, not_a_picture.status_code, unknown.status_code) == (422, 415, 422), five.text
    assert "at most 4" in five.json()["detail"] and "photo 1" in not_a_picture.json()["detail"]

    exif = Image.Exif()
    exif[0x010F] = "LeakyCam"  # the camera's make
    exif[0x0112] = 6  # taken with the phone on its side: turn 90 degrees to show upright
    exif[0x8825] = {1: "N", 2: (31.0, 14.0, 3.0), 3: "E", 4: (121.0, 28.0, 1.0)}  # GPS: where it was taken
    tagged = image_bytes("JPEG", (2400, 1800), exif=exif)
    assert b"LeakyCam" in tagged and Image.open(io.BytesIO(tagged)).getexif().get_ifd(0x8825)
    sent = report(api, token, [tagged, photo])
    assert sent.status_code == 201, sent.text
    police = api.key("police")
    kept = httpx.get(f"{api.url}/api/v1/events/{sent.json()['event_id']}/photos/1", headers=police).content
    assert b"LeakyCam" not in kept and b"Exif" not in kept
    cleaned = Image.open(io.BytesIO(kept))
    assert (cleaned.format, cleaned.size, dict(cleaned.getexif())) == ("JPEG", (1200, 1600), {})
    snapshot = httpx.get(f"{api.url}/api/v1/events/{sent.json()['event_id']}/snapshot", headers=police)
    assert snapshot.content == kept  # the first photo is the event's snapshot
    missing = httpx.get(f"{api.url}/api/v1/events/{sent.json()['event_id']}/photos/3", headers=police)
    assert missing.status_code == 404

    stall = report(api, token, [photo], category="road_stall", text="A fruit stall blocks the fire lane")
    hazard = report(api, token, [], category="fire_hazard", text="E-bikes charging in the stairwell")
    assert stall.status_code == hazard.status_code == 201
    assert (stall.json()["kind"], stall.json()["route"]) == ("enforcement", "city_management")
    assert (hazard.json()["kind"], hazard.json()["route"]) == ("fire", "fire")
    police_sees = {a["id"] for a in get(api, "/api/v1/alerts", police).json()["items"]}
    assert police_sees == {sent.json()["alert_id"]}
    stalls = get(api, "/api/v1/alerts", api.key("admin"), kind="enforcement").json()["items"]
    assert [(a["id"], a["type"], a["severity"]) for a in stalls] == [(stall.json()["alert_id"], "road_stall", "minor")]
    [fire] = get(api, "/api/v1/alerts", api.key("fire")).json()["items"]
    assert (fire["type"], fire["severity"]) == ("fire_hazard", "minor")


def test_links_are_revocable_and_a_reporter_reads_only_their_own_reports(phone_api: ApiServer) -> None:
    api = phone_api
    admin, police = api.key("admin"), api.key("police", community="east-gate")
    wang, zhao = register(api), register(api, "Corner shop Zhao")
    assert httpx.post(f"{api.url}/api/v1/reporters/{wang}/links", headers=api.key("fire")).status_code == 403
    outside = httpx.post(f"{api.url}/api/v1/reporters/{wang}/links", headers=api.key("police", community="west-lake"))
    assert outside.status_code == 404
    first, second = link(api, wang, police), link(api, zhao, admin)
    sent = report(api, first["token"], [])
    assert sent.status_code == 201, sent.text
    alert_id = sent.json()["alert_id"]

    mine = get(api, "/api/v1/reports/mine", bearer(first["token"])).json()
    assert [(r["alert_id"], r["status"], r["replies"]) for r in mine] == [(alert_id, "received", [])]
    assert get(api, "/api/v1/reports/mine", bearer(second["token"])).json() == []
    # Only a desk that sees the report replies to it, and only to a citizen's report.
    replies = f"{api.url}/api/v1/reports/{alert_id}/replies"
    fire = httpx.post(replies, headers=api.key("fire"), json={"text": "x"})
    reporter = httpx.post(replies, headers=bearer(first["token"]), json={"text": "x"})
    assert (fire.status_code, reporter.status_code) == (404, 403)
    acked = httpx.post(f"{api.url}/api/v1/alerts/{alert_id}/acknowledge", headers=police)
    assert acked.status_code == 200
    assert get(api, "/api/v1/reports/mine", bearer(first["token"])).json()[0]["status"] == "acknowledged"

    [listed] = get(api, f"/api/v1/reporters/{wang}/links", police).json()
    assert (listed["id"], listed["revoked_at"]) == (first["link"]["id"], None)
    assert httpx.delete(f"{api.url}/api/v1/reporter-links/{first['link']['id']}", headers=police).status_code == 204
    eventually(lambda: get(api, "/api/v1/reports/mine", bearer(first["token"])).status_code == 401)
    assert get(api, "/api/v1/reports/mine", bearer(second["token"])).status_code == 200
    assert httpx.get(f"{api.url}/report").headers["content-security-policy"].startswith("default-src 'none'")


def test_the_reporter_commands_make_a_link_with_its_qr_code_and_revoke_it(phone_api: ApiServer, tmp_path: Path) -> None:
    api, reporter_id = phone_api, register(phone_api)
    env = {
        "PATROLNET_DATABASE_URL": api.database_url,
        "PATROLNET_PUBLIC_URL": "https://alerts.example",
        "PATH": "/usr/bin:/bin",
    }
    env |= {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}

    def reporter(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "reporter", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    qr = tmp_path / "link.svg"
    made = reporter("link", reporter_id, "--by", "Officer Li", *(["--qr", str(qr)] if find_spec("segno") else []))
    link_id, token = re.search(r"link (\S+)\nhttps://alerts\.example/report#(pl_\S+)\n", made).groups()  # type: ignore[union-attr]
    assert get(api, "/api/v1/reports/form", bearer(token)).json()["site"] == "willow-court"
    if find_spec("segno"):
        assert qr.read_text().startswith("<svg")
    reporter("unlink", link_id)
    eventually(lambda: get(api, "/api/v1/reports/form", bearer(token)).status_code == 401)
