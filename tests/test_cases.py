"""Enforcement cases on the real database and API: parking and stalls reach the enforcement desks, not the police;
a case is worked from open to closed with every step in its trail and its alert's; the weekly counts; joint
operations; CAP; and a case that cannot be opened never costs its alert."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from api_helpers import EAST, JPEG, add_person, get, raise_alert, session_headers, sign_in, sse_take, write
from conftest import ApiServer
from test_cap import check_cap

from alerts.api.cap import NS
from alerts.core.models import Alert, Event, EventKind, Place
from alerts.core.policy import AlertPolicy
from alerts.store.database import WriteBatch

CAMERA = EAST.model_copy(update={"device": "cam-kerb"})
NEWER_JPEG = b"\xff\xd8\xff\xe1" + b"\x01" * 64


def camera_parking(api: ApiServer) -> tuple[Event, Alert]:
    """An illegal parking alert as a camera's rule raises it (its kind is checked in test_zones_rules)."""
    return raise_alert(api.database_url, EventKind.ENFORCEMENT, CAMERA, snapshot=JPEG, type="illegal_parking")


def reported_stall(api: ApiServer, type_: str = "road_stall") -> Alert:
    """A stall reported from a phone or a kiosk: a reporter's event, at a site, no device."""
    place = Place(**EAST.model_dump(exclude={"device"}))
    event = Event(kind=EventKind.ENFORCEMENT, type=type_, place=place, source="reporter:Tea shop", snapshot=JPEG)
    alert = AlertPolicy().apply(event)
    assert alert is not None
    write(api.database_url, WriteBatch(events=[event], alerts=[alert]))
    return alert


def case_of(api: ApiServer, headers: dict[str, str], alert: Alert) -> dict:
    cases = get(api, "/api/v1/cases", headers).json()
    [case] = [c for c in cases if c["alert_id"] == str(alert.id)]
    return case


def test_parking_and_a_reported_stall_reach_the_enforcement_desks_not_the_police(api: ApiServer) -> None:
    parking, stall = camera_parking(api)[1], reported_stall(api)
    city, traffic, police = api.key("city_management"), api.key("traffic_police"), api.key("police")
    listed = {a["id"] for a in get(api, "/api/v1/alerts", city).json()["items"]}
    assert listed == {str(parking.id), str(stall.id)}
    assert {c["alert_id"]: c["department"] for c in get(api, "/api/v1/cases", city).json()} == {
        str(parking.id): "traffic_police",
        str(stall.id): "city_management",
    }
    assert [c["alert_id"] for c in get(api, "/api/v1/cases", traffic).json()] == [str(parking.id)]
    assert get(api, "/api/v1/alerts", police).json()["items"] == []
    assert get(api, "/api/v1/cases", police).json() == []
    for alert in (parking, stall):
        assert get(api, f"/api/v1/alerts/{alert.id}", police).status_code == 404
        assert get(api, f"/api/v1/cases/{case_of(api, city, alert)['id']}", police).status_code == 404

    stream = f"{api.url}/api/v1/alerts/stream"
    seen_by_police = sse_take(stream, police, 1, lambda: camera_parking(api), quiet_s=3)
    seen_by_city = sse_take(stream, city, 1, lambda: reported_stall(api, "illegal_building"))
    assert seen_by_police == []
    assert [(event, data["type"]) for _, event, data in seen_by_city] == [("raised", "illegal_building")]


def test_a_camera_case_is_assigned_rectified_rechecked_with_the_camera_picture_and_closed(api: ApiServer) -> None:
    admin = api.key("admin")
    parking = camera_parking(api)[1]
    warden = add_person(api, admin, "warden", "traffic_police", name="Wang Fang")["person"]
    add_person(api, admin, "desk", "city_management", name="Desk Li")
    desk = session_headers(sign_in(api, "desk"))
    case = case_of(api, desk, parking)
    assert (case["status"], case["camera"], case["place"]["device"]) == ("open", True, "cam-kerb")
    url = f"{api.url}/api/v1/cases/{case['id']}"

    refused = httpx.post(f"{url}/close", headers=desk, json={"note": "done"})
    assert refused.status_code == 409 and "cannot close a case that is open" in refused.json()["detail"]
    deadline = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assigned = httpx.post(f"{url}/assign", headers=desk, json={"person_id": warden["id"], "deadline": deadline})
    assert assigned.status_code == 200, assigned.text
    assert (assigned.json()["case"]["status"], assigned.json()["case"]["assignee"]) == ("assigned", "Wang Fang")
    assert httpx.post(f"{url}/rectify", headers=desk, data={"note": "moved"}).status_code == 422, "a photo is needed"
    rectified = httpx.post(
        f"{url}/rectify", headers=desk, data={"note": "van moved"}, files=[("photos", ("kerb.jpg", JPEG, "image/jpeg"))]
    )
    assert rectified.status_code == 200, rectified.text
    [upload] = rectified.json()["steps"][-1]["photos"]
    assert httpx.get(f"{url}/photos/{upload['id']}", headers=desk).content == JPEG

    # What the camera sees later (an event of another rule, stored after the alert): the recheck's picture.
    later = raise_alert(api.database_url, EventKind.SECURITY, CAMERA, snapshot=NEWER_JPEG, type="intrusion")[0]
    rechecked = httpx.post(f"{url}/recheck", headers=desk, data={"note": "kerb clear"})
    assert rechecked.status_code == 200, rechecked.text
    [picture] = rechecked.json()["steps"][-1]["photos"]
    assert (picture["source"], picture["event_id"]) == ("camera", str(later.id))
    assert httpx.get(f"{url}/photos/{picture['id']}", headers=desk).content == NEWER_JPEG
    assert get(api, f"/api/v1/cases/{case['id']}/photos/{picture['id']}", api.key("police")).status_code == 404
    closed = httpx.post(f"{url}/close", headers=desk, json={"note": "closed on recheck"})
    assert closed.status_code == 200 and closed.json()["case"]["status"] == "closed"

    steps = [(s["action"], s["to_status"]) for s in closed.json()["steps"]]
    assert steps == [
        ("open", "open"), ("assign", "assigned"), ("rectify", "rectified"), ("recheck", "rechecked"),
        ("close", "closed"),
    ]  # fmt: skip
    detail = get(api, f"/api/v1/alerts/{parking.id}", desk).json()
    assert detail["alert"]["status"] == "resolved", "closing the case resolves its alert"
    trail = [(h["action"], h["actor"], h["person_id"] is not None) for h in detail["history"]]
    assert trail == [(f"case-{a}", "Desk Li", True) for a in ("assign", "rectify", "recheck", "close")]
    assert "camera cam-kerb picture" in detail["history"][2]["note"]
    with psycopg.connect(api.database_url) as conn:
        changes = [r[0] for r in conn.execute("SELECT change FROM alert_changes WHERE alert_id = %s ORDER BY seq",
                                              (parking.id,))]  # fmt: skip
    assert changes == ["raised", "case_assigned", "case_rectified", "case_rechecked", "case_closed", "resolved"]

    weekly = get(api, "/api/v1/cases/weekly.csv", desk)
    assert weekly.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(weekly.text)))
    assert [(r["community"], r["department"], r["type"], r["opened"], r["closed"]) for r in rows] == [
        ("east-gate", "traffic_police", "illegal_parking", "1", "1")
    ]
    assert get(api, "/api/v1/cases/weekly", desk, format="csv").text == weekly.text
    assert get(api, "/api/v1/cases/weekly", api.key("police")).json() == []
    assert get(api, "/api/v1/cases/weekly", desk, timezone="Mars/Base").status_code == 422

    reopened = httpx.post(f"{url}/reopen", headers=desk, json={"note": "van is back"})
    assert reopened.status_code == 200 and reopened.json()["case"]["status"] == "reopened"
    assert httpx.post(f"{url}/assign", headers=desk, json={}).json()["case"]["status"] == "assigned"


def test_a_reported_case_needs_photos_at_recheck_and_the_case_is_assigned_only_to_who_may_see_it(
    api: ApiServer,
) -> None:
    admin = api.key("admin")
    stall = reported_stall(api)
    officer = add_person(api, admin, "officer", "police")["person"]
    city = api.key("city_management")
    case = case_of(api, city, stall)
    assert case["camera"] is False
    url = f"{api.url}/api/v1/cases/{case['id']}"
    refused = httpx.post(f"{url}/assign", headers=city, json={"person_id": officer["id"]})
    assert refused.status_code == 422 and "may not see" in refused.text
    assert httpx.post(f"{url}/assign", headers=city, json={"department": "market_regulation"}).status_code == 200
    photo = [("photos", ("x.png", b"GIF89a" + b"\x00" * 8, "image/png"))]
    assert httpx.post(f"{url}/rectify", headers=city, files=photo).status_code == 415
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    assert (
        httpx.post(f"{url}/rectify", headers=city, files=[("photos", ("p.png", png, "image/png"))]).status_code == 200
    )
    rechecked = httpx.post(f"{url}/recheck", headers=city, data={"note": "gone"}).json()
    assert rechecked["steps"][-1]["photos"] == [], "no camera: nothing is attached"
    assert rechecked["case"]["department"] == "market_regulation"


def test_joint_operations_are_recorded_with_the_cases_they_handled(api: ApiServer) -> None:
    parking, stall = camera_parking(api)[1], reported_stall(api)
    city = api.key("city_management", community=EAST.community)
    ids = [case_of(api, city, a)["id"] for a in (parking, stall)]
    body = {"day": "2026-12-05", "departments": ["city_management", "traffic_police"], "team": ["Li", "Wang"],
            "case_ids": ids, "note": "market street sweep"}  # fmt: skip
    made = httpx.post(f"{api.url}/api/v1/cases/joint-operations", headers=city, json=body)
    assert made.status_code == 201, made.text
    assert (made.json()["cases_handled"], made.json()["community"]) == (2, EAST.community)
    traffic = api.key("traffic_police")
    refused = httpx.post(f"{api.url}/api/v1/cases/joint-operations", headers=traffic, json=body)
    assert refused.status_code == 422 and ids[1] in refused.text, "traffic police do not see the stall"
    assert [o["id"] for o in get(api, "/api/v1/cases/joint-operations", city).json()] == [made.json()["id"]]
    assert get(api, "/api/v1/cases/joint-operations", api.key("city_management", community="west-lake")).json() == []


def test_enforcement_alerts_in_cap_with_category_other(api: ApiServer) -> None:
    parking = camera_parking(api)[1]
    response = get(api, f"/api/v1/alerts/{parking.id}/cap", api.key("city_management"))
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    check_cap(root)
    events = {
        i.findtext("cap:language", namespaces=NS): i.findtext("cap:event", namespaces=NS)
        for i in root.iterfind("cap:info", NS)
    }
    assert events == {"zh-CN": "违章停车", "en-US": "illegal parking"}
    assert {i.findtext("cap:category", namespaces=NS) for i in root.iterfind("cap:info", NS)} == {"Other"}
    assert get(api, f"/api/v1/alerts/{parking.id}/cap", api.key("police")).status_code == 404


def test_a_case_that_cannot_be_opened_never_costs_its_alert(api: ApiServer) -> None:
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE cases ADD CONSTRAINT refuse_building CHECK (type <> 'illegal_building')")
    building = reported_stall(api, "illegal_building")
    stall = reported_stall(api)
    city = api.key("city_management")
    assert {a["id"] for a in get(api, "/api/v1/alerts", city).json()["items"]} == {str(building.id), str(stall.id)}
    assert [c["alert_id"] for c in get(api, "/api/v1/cases", city).json()] == [str(stall.id)]
