"""What the page shows of this round's features, in headless Chromium against the real API: an alert's video clip
played with ranges, a citizen's report with its photos and the desk's reply, who answers for the grid, the
escalated badge, and an enforcement case moved through its steps on the page; and the words of the new types and
changes in both languages."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import av
import httpx
import psycopg
import pytest
from api_helpers import EAST, JPEG, Browser, image_bytes, raise_alert, signed_in_page
from conftest import ApiServer
from PIL import Image
from test_grids import GRIDS_CSV, PEOPLE_CSV, upload
from test_phone_reports import link, register, report

from alerts.api.reports import CATEGORIES
from alerts.auth import ROLE_PERMISSIONS, Permission
from alerts.core.models import EventKind
from alerts.notify.wording import CHANGES, KINDS, TYPES
from alerts.store.alert_queries import ADD_HISTORY_SQL
from alerts.store.cases import TRANSITIONS
from alerts.store.clips import CLIP_READY
from alerts.store.database import RECORD_CHANGES

CAMERA = EAST.with_device("cam-1")


@pytest.fixture
def clip_api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The alert API, keeping clips in a folder of the test's."""
    monkeypatch.setenv("PATROLNET_CLIP_DIR", str(tmp_path / "clips"))
    (tmp_path / "clips").mkdir()
    with ApiServer(database_url) as server:
        yield server


def small_mp4(path: Path, frames: int = 20) -> bytes:
    """Two seconds of H.264 at 10 fps, 64x48, its index first (as the nodes' clips): a file a browser plays."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for n in range(frames):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (n * 12, 80, 160)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path.read_bytes()


def add_clip(api: ApiServer, folder: Path, alert_id: UUID, camera: str) -> tuple[UUID, int]:
    """A complete clip of the alert, its file in the API's folder, as an upload leaves it; its clip_ready change."""
    clip_id = uuid4()
    data = small_mp4(folder / f"{clip_id}.mp4")
    started = datetime.now(UTC) - timedelta(seconds=10)
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO clips (id, alert_id, camera, kind, started_at, ended_at, bytes, sha256, received, complete,"
            " completed_at) VALUES (%s, %s, %s, 'security', %s, %s, %s, %s, %s, true, now())",
            [clip_id, alert_id, camera, started, started + timedelta(seconds=2), len(data),
             hashlib.sha256(data).hexdigest(), len(data)],
        )  # fmt: skip
        conn.execute(RECORD_CHANGES, ([alert_id], [CLIP_READY]))
    return clip_id, len(data)


def test_a_police_desk_plays_an_alerts_clip_with_ranges_and_a_new_clip_appears_when_it_is_ready(
    clip_api: ApiServer, tmp_path: Path
) -> None:
    api, folder = clip_api, tmp_path / "clips"
    _, alert = raise_alert(api.database_url, EventKind.SECURITY, CAMERA, type="intrusion")
    _, size = add_clip(api, folder, alert.id, "cam-1")
    policy = httpx.get(f"{api.url}/").headers["content-security-policy"]
    assert "media-src 'self'" in policy

    with signed_in_page(api, "police", f"/#open={alert.id}") as page:
        video = "document.querySelector('#clips video')"
        page.wait(f"{video}?.readyState >= 1", timeout=20)  # the player read the clip's index: CSP and cookie let it
        assert 1.5 < page.js(f"{video}.duration") < 2.5
        assert "camera cam-1" in page.js("document.getElementById('clips').textContent")
        ranged = page.js(
            f"fetch({video}.src, {{headers: {{Range: 'bytes=100-1099'}}}})"
            ".then(async r => [r.status, r.headers.get('content-range'), (await r.arrayBuffer()).byteLength])"
        )
        assert ranged == [206, f"bytes 100-1099/{size}", 1000]
        page.js(f"{video}.currentTime = 1.5")
        page.wait(f"!{video}.seeking && {video}.currentTime > 1.4")

        # Another camera's clip arrives while the detail is open: the stream's clip_ready shows it.
        add_clip(api, folder, alert.id, "cam-2")
        page.wait("document.querySelectorAll('#clips video').length === 2")
        assert "camera cam-2" in page.js("document.getElementById('clips').textContent")


def test_a_report_shows_its_photos_and_who_answers_and_the_desks_reply_reaches_the_trail_and_the_reporter(
    api: ApiServer, tmp_path: Path
) -> None:
    admin = api.key("admin")
    assert upload(api, admin, ("grids.csv", GRIDS_CSV.encode()), ("people.csv", PEOPLE_CSV.encode())).status_code == 200
    [zhao] = [p for p in httpx.get(f"{api.url}/api/v1/people", headers=admin).json() if p["login"] == "zhao.lei"]
    assert httpx.patch(f"{api.url}/api/v1/people/{zhao['id']}", headers=admin, json={"on_duty": True}).is_success
    token = link(api, register(api), api.key("police", community="east-gate"))["token"]
    sent = report(api, token, [image_bytes("JPEG", (640, 480)), image_bytes("PNG", (320, 240))])
    assert sent.status_code == 201, sent.text
    alert_id = sent.json()["alert_id"]

    with signed_in_page(api, "police", f"/#open={alert_id}", community="east-gate") as page:
        thumbs = "[...document.querySelectorAll('#photos img.thumb')]"
        page.wait(f"{thumbs}.filter(i => i.complete && i.naturalWidth).length === 2")  # loaded with the cookie
        assert page.js("document.querySelectorAll('#pictures img').length") == 0, "the first photo is not shown twice"
        page.js("document.querySelector('#photos img.thumb').click()")
        assert page.js("document.querySelector('#photos img.thumb').classList.contains('full')"), "full size"
        assert "Someone tries the bike shed's doors" in page.js("document.getElementById('report-text').textContent")
        team = page.js("document.getElementById('team').textContent")
        assert "leader Wang Fang +86 138 0000 0001" in team and "on duty: Zhao Lei" in team
        phones = page.js("[...document.querySelectorAll('#team a')].map(a => a.getAttribute('href'))")
        assert phones == ["tel:+8613800000001", "tel:+8613800000002"]

        page.js("document.getElementById('reply-text').value = 'An officer is on the way'")
        page.js("document.getElementById('reply-send').click()")
        trail = "document.getElementById('trail').textContent"
        page.wait(f"{trail}.includes('Desk-Police Person: reply An officer is on the way')")
    mine = httpx.get(f"{api.url}/api/v1/reports/mine", headers={"Authorization": f"Bearer {token}"}).json()
    assert [r["text"] for r in mine[0]["replies"]] == ["An officer is on the way"]


def test_an_escalated_alert_gets_its_badge_and_its_step_in_the_detail(api: ApiServer) -> None:
    _, alert = raise_alert(api.database_url, EventKind.SECURITY, CAMERA, type="intrusion")
    row = f"document.querySelector('[data-open=\"{alert.id}\"]').closest('tr')"
    with signed_in_page(api, "police") as page:
        assert not page.js(f"{row}.querySelector('[data-escalated]')")
        with psycopg.connect(api.database_url, autocommit=True) as conn:
            note = "step 1 of 2, to grid team: Wang Fang"
            conn.execute(ADD_HISTORY_SQL, (alert.id, "escalation", "escalate", "new", "new", note, None))
            conn.execute(RECORD_CHANGES, ([alert.id], ["escalated"]))
        page.wait(f"{row}.querySelector('[data-escalated]')?.textContent === 'escalated'")
        page.js(f"document.querySelector('[data-open=\"{alert.id}\"]').click()")
        page.wait(f"document.getElementById('escalation')?.textContent.includes({json.dumps(note)})")


def set_files(page: Browser, selector: str, *paths: Path) -> None:
    """Chooses files for a file input, as a person picking them would."""
    root = page.send("DOM.getDocument")["root"]["nodeId"]
    node = page.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
    page.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])


def test_a_city_management_desk_takes_a_case_through_its_steps_on_the_page(api: ApiServer, tmp_path: Path) -> None:
    _, alert = raise_alert(api.database_url, EventKind.ENFORCEMENT, EAST.with_device("cam-kerb"), snapshot=JPEG,
                           type="illegal_parking")  # fmt: skip
    photo = tmp_path / "kerb-cleared.jpg"
    photo.write_bytes(image_bytes("JPEG", (320, 240)))
    with signed_in_page(api, "city_management") as page:
        steps, acting = page.js("[CASE_STEPS, ACT_ROLES]")
        assert steps == {action: [str(s) for s in sources] for action, (sources, _) in TRANSITIONS.items()}
        assert sorted(acting) == sorted(r for r, p in ROLE_PERMISSIONS.items() if Permission.ACT in p)

        case = page.wait("document.querySelector('#case-list tr[data-case]')?.dataset.case")
        row = f"document.querySelector('#case-list tr[data-case=\"{case}\"]')"
        assert page.js(f"{row}.dataset.status") == "open"
        assert "illegal parking" in page.js(f"{row}.textContent")
        assert page.js(f"[...{row}.querySelectorAll('button')].map(b => b.dataset.step)") == ["assign"]

        def step(action: str, after: str) -> None:
            page.js(f"{row}.querySelector('button[data-step={action}]').click()")
            page.wait(f"{row}?.dataset.status === {after!r}")

        step("assign", "assigned")
        assert "Desk-City-Management Person" in page.js(f"{row}.textContent")
        page.js(f"{row}.querySelector('[data-note]').value = 'car towed'")
        set_files(page, f'#case-list tr[data-case="{case}"] input[data-photos]', photo)
        step("rectify", "rectified")
        step("recheck", "rechecked")
        assert page.js(f"[...{row}.querySelectorAll('button')].map(b => b.dataset.step)") == ["close", "reopen"]
        step("close", "closed")
        page.wait("document.querySelector('#weekly tbody tr')?.textContent.includes('illegal parking')")
        cells = page.js("[...document.querySelectorAll('#weekly tbody tr td')].map(td => td.textContent.trim())")
        assert cells[1:] == ["east-gate", "traffic police", "illegal parking", "1", "1"]
        csv = page.js("fetch(document.getElementById('weekly-csv').href).then(r => r.text())")
        assert csv.splitlines()[1].endswith(",east-gate,traffic_police,illegal_parking,1,1")

        page.js("(s => { s.value = 'zh-CN'; s.dispatchEvent(new Event('change')); })(document.getElementById('lang'))")
        page.wait(f"{row}.textContent.includes('已结案') && {row}.textContent.includes('违章停车')")
        assert "执法案件" in page.js("document.getElementById('cases').textContent")
    detail = httpx.get(f"{api.url}/api/v1/cases/{case}", headers=api.key("admin")).json()
    assert [s["action"] for s in detail["steps"]] == ["open", "assign", "rectify", "recheck", "close"]
    assert detail["steps"][2]["note"] == "car towed" and len(detail["steps"][2]["photos"]) == 1
    assert detail["case"]["alert_id"] == str(alert.id)


def test_every_new_type_kind_and_change_has_words_in_both_languages() -> None:
    assert {c.type for c in CATEGORIES.values()} <= TYPES.keys()
    assert "enforcement" in KINDS
    steps = {f"case_{to}" for _, to in TRANSITIONS.values()}
    for change in [*steps, "replied", "escalated", "unacknowledged", CLIP_READY]:
        zh, en = CHANGES[change]
        assert zh != en and en, change
