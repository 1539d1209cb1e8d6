"""People on the real API and database: sign-in, throttling, sessions and their revocation (an open stream ends
within 2 s), CSRF, TOTP for admins, the roles of people, assignment, the audit trail, and ``patrolnet person``."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pyotp
import pytest
from api_helpers import EAST, PASSWORD, WEST, add_person, raise_alert, session_headers, sign_in
from conftest import REPO, ApiServer

from alerts.auth import SESSION_COOKIE
from alerts.core.models import EventKind


def whoami(api: ApiServer, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{api.url}/api/v1/whoami", headers=headers)


def test_a_person_signs_in_with_a_host_cookie_and_is_their_role_and_scope(api: ApiServer) -> None:
    added = add_person(api, api.key("admin"), "li.wei", "police", name="Li Wei", phone="+86 10 5555", community="c1")
    assert added["totp_uri"] is None and added["person"]["login"] == "li.wei"

    response = sign_in(api, "li.wei")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "Path=/" in cookie and "Domain" not in cookie
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=strict", "Max-Age=43200"))
    me = whoami(api, session_headers(response, csrf=False)).json()
    assert (me["name"], me["role"], me["community"]) == ("Li Wei", "police", "c1")
    assert me["person_id"] == added["person"]["id"] and me["key_id"] is None

    assert sign_in(api, "li.wei", "wrong password!").status_code == 401
    assert sign_in(api, "nobody", PASSWORD).status_code == 401
    assert whoami(api, {"Cookie": f"{SESSION_COOKIE}=forged"}).status_code == 401
    # A machine's role is not a person's.
    response = httpx.post(
        f"{api.url}/api/v1/people",
        headers=api.key("admin"),
        json={"login": "node", "name": "n", "role": "edge", "password": PASSWORD},
    )
    assert response.status_code == 422 and "machines" in response.text


def test_wrong_passwords_are_throttled_by_login_and_address_but_the_person_signs_in_from_elsewhere(
    api: ApiServer,
) -> None:
    add_person(api, api.key("admin"), "fire.desk", "fire")
    answers = [sign_in(api, "fire.desk", "guessing-away").status_code for _ in range(5)]
    assert answers == [401] * 5
    throttled = sign_in(api, "fire.desk")  # the right password, from the guesser's address
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    # The person at their own desk (another address) is not locked out.
    desk = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with desk:
        response = desk.post(f"{api.url}/api/v1/session", json={"login": "fire.desk", "password": PASSWORD})
    assert response.status_code == 200, response.text
    time.sleep(2.1)  # the first wait (2 s) over, the right password goes through again
    assert sign_in(api, "fire.desk").status_code == 200


def test_a_change_made_with_the_cookie_needs_the_csrf_token_and_a_key_needs_none(api: ApiServer) -> None:
    _, alert = raise_alert(api.database_url, EventKind.FIRE)
    add_person(api, api.key("admin"), "fire.desk", "fire")
    signed = session_headers(sign_in(api, "fire.desk"))
    url = f"{api.url}/api/v1/alerts/{alert.id}/acknowledge"
    no_token = {k: v for k, v in signed.items() if k != "X-CSRF-Token"}
    for headers in (no_token, {**no_token, "X-CSRF-Token": "0" * 64}):
        refused = httpx.post(url, headers=headers)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
        refused = httpx.post(url, headers=headers, json={"note": "with a body: refused before it is read"})
        assert refused.status_code == 403
    assert httpx.get(f"{api.url}/api/v1/alerts", headers=no_token).status_code == 200, "reading needs no token"
    assert httpx.post(url, headers=signed, json={"note": "on my way"}).status_code == 200
    resolved = httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/resolve", headers=api.key("fire"))
    assert resolved.status_code == 200, "a key is not a cookie: no CSRF token"


def test_an_acknowledgement_is_recorded_under_the_persons_name_and_id(api: ApiServer) -> None:
    _, alert = raise_alert(api.database_url, EventKind.FIRE)
    person = add_person(api, api.key("admin"), "wang.fang", "fire", name="Wang Fang")["person"]
    signed = session_headers(sign_in(api, "wang.fang"))
    acked = httpx.post(f"{api.url}/api/v1/alerts/{alert.id}/acknowledge", headers=signed, json={"note": "seen"})
    assert acked.json()["status_by"] == "Wang Fang"
    history = httpx.get(f"{api.url}/api/v1/alerts/{alert.id}", headers=signed).json()["history"]
    assert [(h["actor"], h["person_id"], h["action"], h["note"]) for h in history] == [
        ("Wang Fang", person["id"], "acknowledge", "seen")
    ]


def _stream_ends_after(api: ApiServer, headers: dict[str, str], end: Callable[[], object]) -> float:
    """Seconds from calling ``end`` until the open alert stream of ``headers`` ends."""
    opened, ended = threading.Event(), threading.Event()

    def read() -> None:
        with httpx.stream(
            "GET", f"{api.url}/api/v1/alerts/stream", headers=headers, timeout=httpx.Timeout(5, read=30)
        ) as response:
            assert response.status_code == 200
            opened.set()
            for _ in response.iter_lines():
                pass
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    assert opened.wait(10)
    time.sleep(0.5)  # the stream is waiting for changes
    started = time.monotonic()
    end()
    assert ended.wait(10), "the stream did not end"
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["sign-out", "admin", "disabled", "new role"])
def test_an_ended_session_ends_its_open_stream_within_2_s(api: ApiServer, how: str) -> None:
    admin = api.key("admin")
    person = add_person(api, admin, "police.desk", "police")["person"]
    signed = session_headers(sign_in(api, "police.desk"))
    other = session_headers(sign_in(api, "police.desk"))  # the same person in another browser
    ends = {
        "sign-out": lambda: httpx.delete(f"{api.url}/api/v1/session", headers=signed).raise_for_status(),
        "admin": lambda: httpx.delete(
            f"{api.url}/api/v1/people/{person['id']}/sessions", headers=admin
        ).raise_for_status(),
        "disabled": lambda: httpx.patch(
            f"{api.url}/api/v1/people/{person['id']}", headers=admin, json={"disabled": True}
        ).raise_for_status(),
        "new role": lambda: httpx.patch(
            f"{api.url}/api/v1/people/{person['id']}", headers=admin, json={"role": "operator"}
        ).raise_for_status(),
    }
    took = _stream_ends_after(api, signed, ends[how])
    assert took < 2.0, f"the stream ended {took:.2f} s after the session"
    assert whoami(api, signed).status_code == 401
    assert (whoami(api, other).status_code == 200) is (how == "sign-out"), "sign-out ends this session only"
    assert (sign_in(api, "police.desk").status_code == 401) is (how == "disabled")


def test_a_person_sees_their_sessions_and_ends_one(api: ApiServer) -> None:
    add_person(api, api.key("admin"), "op.desk", "operator")
    phone, desk = (session_headers(sign_in(api, "op.desk")) for _ in range(2))
    mine = httpx.get(f"{api.url}/api/v1/sessions", headers=desk).json()
    assert len(mine) == 2
    phone_id = whoami(api, phone).json()["session_id"]
    assert httpx.delete(f"{api.url}/api/v1/sessions/{phone_id}", headers=desk).status_code == 204
    assert whoami(api, phone).status_code == 401 and whoami(api, desk).status_code == 200
    # Another person's session is not theirs to end.
    add_person(api, api.key("admin"), "op.two", "operator")
    two = session_headers(sign_in(api, "op.two"))
    desk_id = whoami(api, desk).json()["session_id"]
    assert httpx.delete(f"{api.url}/api/v1/sessions/{desk_id}", headers=two).status_code == 404
    assert httpx.get(f"{api.url}/api/v1/sessions", headers=api.key("operator")).status_code == 400


def test_an_admin_signs_in_with_a_totp_code_used_once(api: ApiServer) -> None:
    added = add_person(api, api.key("admin"), "chief", "admin")
    assert added["person"]["totp"] and added["totp_uri"].startswith("otpauth://totp/patrolnet:chief")
    totp = pyotp.TOTP(pyotp.parse_uri(added["totp_uri"]).secret)
    assert sign_in(api, "chief").status_code == 401, "no code"
    assert sign_in(api, "chief", code="000000" if totp.now() != "000000" else "111111").status_code == 401
    code = totp.now()
    signed = session_headers(sign_in(api, "chief", code=code))
    assert httpx.get(f"{api.url}/api/v1/people", headers=signed).status_code == 200, "a person admin administers"
    assert sign_in(api, "chief", code=code).status_code == 401, "a code is good once"


def test_the_roles_of_people_see_and_do_what_they_are_for(api: ApiServer) -> None:
    admin = api.key("admin")
    parking = raise_alert(api.database_url, EventKind.ENFORCEMENT, type="illegal_parking")[1]
    stalls = raise_alert(api.database_url, EventKind.ENFORCEMENT, type="zone_occupied")[1]
    intrusion = raise_alert(api.database_url, EventKind.SECURITY, type="intrusion")[1]
    fire = raise_alert(api.database_url, EventKind.FIRE)[1]
    elsewhere = raise_alert(api.database_url, EventKind.FIRE, WEST)[1]
    add_person(api, admin, "traffic", "traffic_police")
    add_person(api, admin, "city", "city_management")
    add_person(api, admin, "grid", "grid_worker", community=EAST.community, grid=EAST.grid)

    def seen(login: str) -> tuple[dict[str, str], set[str]]:
        headers = session_headers(sign_in(api, login))
        items = httpx.get(f"{api.url}/api/v1/alerts", headers=headers).json()["items"]
        return headers, {a["id"] for a in items}

    assert seen("traffic")[1] == {str(parking.id)}
    assert seen("city")[1] == {str(parking.id), str(stalls.id)}
    add_person(api, admin, "officer", "police")
    assert seen("officer")[1] == {str(intrusion.id)}, "the police no longer get the enforcement alerts"
    grid, ids = seen("grid")
    assert ids == {str(a.id) for a in (parking, stalls, intrusion, fire)} and str(elsewhere.id) not in ids
    url = f"{api.url}/api/v1/alerts/{fire.id}"
    assert httpx.post(f"{url}/resolve", headers=grid).status_code == 403, "a grid worker only acknowledges"
    assert httpx.post(f"{url}/acknowledge", headers=grid).status_code == 200
    grid_no_scope = {"login": "g2", "name": "G", "role": "grid_worker", "password": PASSWORD}
    assert httpx.post(f"{api.url}/api/v1/people", headers=admin, json=grid_no_scope).status_code == 422


def test_an_alert_is_assigned_to_a_person_who_may_see_it_and_the_trail_says_so(api: ApiServer) -> None:
    admin = api.key("admin")
    fire = raise_alert(api.database_url, EventKind.FIRE)[1]
    crew = add_person(api, admin, "crew", "fire", name="Zhao Lei")["person"]
    traffic = add_person(api, admin, "traffic", "traffic_police")["person"]
    desk = add_person(api, admin, "desk", "fire", name="Desk Officer")
    signed = session_headers(sign_in(api, "desk"))
    url = f"{api.url}/api/v1/alerts/{fire.id}/assignee"

    assigned = httpx.put(url, headers=signed, json={"person_id": crew["id"], "note": "nearest crew"})
    assert assigned.status_code == 200, assigned.text
    assert (assigned.json()["assignee"], assigned.json()["assignee_id"]) == ("Zhao Lei", crew["id"])
    refused = httpx.put(url, headers=signed, json={"person_id": traffic["id"]})
    assert refused.status_code == 422 and "may not see" in refused.text
    detail = httpx.get(f"{api.url}/api/v1/alerts/{fire.id}", headers=admin).json()
    assert detail["alert"]["assignee"] == "Zhao Lei"
    assert [(h["actor"], h["action"], h["note"], h["person_id"]) for h in detail["history"]] == [
        ("Desk Officer", "assign", "to Zhao Lei. nearest crew", desk["person"]["id"])
    ]


def test_an_idle_session_and_an_old_one_end(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    idle, lifetime = "PATROLNET_SESSION_IDLE_S", "PATROLNET_SESSION_MAX_S"
    for setting, other in ((idle, lifetime), (lifetime, idle)):
        monkeypatch.setenv(setting, "1")
        monkeypatch.setenv(other, "3600")
        monkeypatch.setenv("PATROLNET_KEY_CACHE_S", "0.2")  # a session stays cached (and good) this long
        with ApiServer(database_url) as api:
            login = setting.rsplit("_", 2)[1].lower()
            add_person(api, api.key("admin"), login, "fire")
            signed = session_headers(sign_in(api, login))
            assert whoami(api, signed).status_code == 200
            time.sleep(1.5)
            assert whoami(api, signed).status_code == 401, f"{setting}=1 ends a session"


def test_the_person_commands_manage_people(database_url: str, api: ApiServer) -> None:
    env = {"PATROLNET_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}

    def person(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "person", *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    added = person("add", "--login", "ops.chief", "--name", "Chen Jing", "--role", "admin", "--on-duty")
    password = re.search(r"password \(shown once\): (\S+)", added)[1]  # type: ignore[index]
    totp = pyotp.TOTP(pyotp.parse_uri(re.search(r"(otpauth://\S+)", added)[1]).secret)  # type: ignore[index]
    listed = person("list")
    assert re.search(r"ops\.chief\s+admin\s+everywhere\s+Chen Jing\s+on duty, totp", listed), listed
    first = session_headers(sign_in(api, "ops.chief", password, totp.now()))

    assert "new password set" in person("passwd", "ops.chief")
    assert whoami(api, first).status_code == 401, "a new password ends the sessions"
    assert sign_in(api, "ops.chief", password, totp.now()).status_code == 401, "the old password no longer works"
    assert "disabled" in person("disable", "ops.chief")
    assert "DISABLED" in person("list")
