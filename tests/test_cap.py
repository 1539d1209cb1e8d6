"""The OASIS CAP 1.2 feed: every message checked against the standard's structure, by hand.

The official XSD is not vendored (its OASIS licence terms and a validator dependency for one
check); instead ``check_cap`` walks the CAP 1.2 element sequences, cardinalities, enumerations
and formats that the schema and the specification's data dictionary require.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from api_helpers import EAST, JPEG, get, raise_alert
from conftest import ApiServer

from alerts.api.cap import ENUMS, NS
from alerts.core.models import EventKind

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
# The CAP 1.2 schema's sequences: (element, min, max) in order; None is unbounded.
ALERT = [
    ("identifier", 1, 1),
    ("sender", 1, 1),
    ("sent", 1, 1),
    ("status", 1, 1),
    ("msgType", 1, 1),
    ("source", 0, 1),
    ("scope", 1, 1),
    ("restriction", 0, 1),
    ("addresses", 0, 1),
    ("code", 0, None),
    ("note", 0, 1),
    ("references", 0, 1),
    ("incidents", 0, 1),
    ("info", 0, None),
]
INFO = [
    ("language", 0, 1),
    ("category", 1, None),
    ("event", 1, 1),
    ("responseType", 0, None),
    ("urgency", 1, 1),
    ("severity", 1, 1),
    ("certainty", 1, 1),
    ("audience", 0, 1),
    ("eventCode", 0, None),
    ("effective", 0, 1),
    ("onset", 0, 1),
    ("expires", 0, 1),
    ("senderName", 0, 1),
    ("headline", 0, 1),
    ("description", 0, 1),
    ("instruction", 0, 1),
    ("web", 0, 1),
    ("contact", 0, 1),
    ("parameter", 0, None),
    ("resource", 0, None),
    ("area", 0, None),
]
PARAMETER = [("valueName", 1, 1), ("value", 1, 1)]
RESOURCE = [
    ("resourceDesc", 1, 1),
    ("mimeType", 1, 1),
    ("size", 0, 1),
    ("uri", 0, 1),
    ("derefUri", 0, 1),
    ("digest", 0, 1),
]
AREA = [
    ("areaDesc", 1, 1),
    ("polygon", 0, None),
    ("circle", 0, None),
    ("geocode", 0, None),
    ("altitude", 0, 1),
    ("ceiling", 0, 1),
]


def check_sequence(element: ET.Element, sequence: Sequence[tuple[str, int, int | None]]) -> None:
    names = [child.tag.removeprefix(CAP) for child in element]
    assert all(child.tag.startswith(CAP) for child in element), names
    position = 0
    for name, low, high in sequence:
        n = 0
        while position < len(names) and names[position] == name:
            n, position = n + 1, position + 1
        assert n >= low and (high is None or n <= high), f"{name}: {n} in {names}"
    assert position == len(names), f"out of order or unknown: {names[position:]}"
    for child in element:
        if len(child) == 0:
            assert (child.text or "").strip(), f"{child.tag} is empty"


def check_cap(alert: ET.Element) -> None:
    """Fails unless ``alert`` is a structurally valid CAP 1.2 <alert>."""
    assert alert.tag == f"{CAP}alert"
    check_sequence(alert, ALERT)
    for name in ("status", "msgType", "scope"):
        assert text(alert, f"cap:{name}") in ENUMS[name], name
    assert not re.search(r"[\s,<&]", text(alert, "cap:identifier"))
    assert DATE_TIME.match(text(alert, "cap:sent"))
    if text(alert, "cap:scope") == "Restricted":
        assert alert.find("cap:restriction", NS) is not None
    if text(alert, "cap:msgType") in ("Update", "Cancel"):
        for reference in text(alert, "cap:references").split():
            sender, ident, sent = reference.split(",")
            assert sender and ident and DATE_TIME.match(sent)
    for info in alert.findall("cap:info", NS):
        check_sequence(info, INFO)
        for name in ("category", "urgency", "severity", "certainty"):
            for value in info.findall(f"cap:{name}", NS):
                assert value.text in ENUMS[name], (name, value.text)
        for parameter in info.findall("cap:parameter", NS):
            check_sequence(parameter, PARAMETER)
        for resource in info.findall("cap:resource", NS):
            check_sequence(resource, RESOURCE)
        for area in info.findall("cap:area", NS):
            check_sequence(area, AREA)
            for geocode in area.findall("cap:geocode", NS):
                check_sequence(geocode, PARAMETER)


def by_language(alert: ET.Element) -> dict[str, ET.Element]:
    """The alert's <info> elements by language, checking there is one per language, Chinese first."""
    infos = alert.findall("cap:info", NS)
    assert [text(i, "cap:language") for i in infos] == ["zh-CN", "en-US"]
    return {text(i, "cap:language"): i for i in infos}


def text(element: ET.Element, path: str) -> str:
    """The text at ``path``; the test fails where there is no such element."""
    found = element.findtext(path, namespaces=NS)
    assert found is not None, f"no {path} in {element.tag}"
    return found


def child(element: ET.Element, path: str) -> ET.Element:
    """The first element at ``path``; the test fails where there is none."""
    found = element.find(path, NS)
    assert found is not None, f"no {path} in {element.tag}"
    return found


PUBLIC_URL = "https://alerts.example/desk"


@pytest.fixture
def public_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The API told where clients reach it (behind a proxy, say), for absolute links."""
    monkeypatch.setenv("PATROLNET_PUBLIC_URL", PUBLIC_URL + "/")
    server = ApiServer(database_url)
    with server:
        yield server


def test_a_fire_alarm_as_cap_with_readings_confirmation_snapshot_and_place(public_api: ApiServer) -> None:
    api = public_api
    event, alert = raise_alert(
        api.database_url,
        snapshot=JPEG,
        severity="critical",
        readings={"smoke": 1.0, "temperature": 41.5},
        confirmed=True,
        confirmed_by=[EAST.device, "smoke-2"],
        title="Smoke alarm at Building 3, stairwell",
        type="smoke",
    )
    fire = api.key("fire")
    # Links follow PATROLNET_PUBLIC_URL, never the Host header a client sends.
    response = get(api, f"/api/v1/alerts/{alert.id}/cap", {**fire, "Host": "evil.example"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/cap+xml"
    root = ET.fromstring(response.content)
    check_cap(root)
    assert (text(root, "cap:msgType"), text(root, "cap:status"), text(root, "cap:sender")) == (
        "Alert",
        "Actual",
        "patrolnet",
    )
    info = by_language(root)["en-US"]
    assert [text(info, f"cap:{n}") for n in ("category", "event", "urgency", "severity", "certainty")] == [
        "Fire",
        "smoke",
        "Immediate",
        "Extreme",
        "Observed",
    ]
    assert text(info, "cap:headline") == "Smoke alarm at Building 3, stairwell"
    parameters = {text(p, "cap:valueName"): text(p, "cap:value") for p in info.findall("cap:parameter", NS)}
    assert parameters["reading:smoke"] == "1.0" and parameters["reading:temperature"] == "41.5"
    assert parameters["confirmed"] == "true" and parameters["device"] == EAST.device
    assert parameters["confirmedBy"] == f"{EAST.device},smoke-2"
    [resource] = info.findall("cap:resource", NS)
    assert text(resource, "cap:mimeType") == "image/jpeg"
    assert text(resource, "cap:uri") == f"{PUBLIC_URL}/api/v1/events/{event.id}/snapshot"
    assert text(info, "cap:web") == f"{PUBLIC_URL}/api/v1/alerts/{alert.id}"
    assert httpx.get(api.url + text(resource, "cap:uri").removeprefix(PUBLIC_URL), headers=fire).content == JPEG
    area = child(info, "cap:area")
    assert text(area, "cap:areaDesc") == "smoke-1, willow-court, g07, east-gate, riverside"
    geocodes = {text(g, "cap:valueName"): text(g, "cap:value") for g in area.findall("cap:geocode", NS)}
    assert geocodes["patrolnet:community"] == "east-gate"
    # The feed writes its messages from the alerts' JSON as the database makes it: readings, attributes and all,
    # the same message as the one written from the alert's model.
    [entry] = ET.fromstring(get(api, "/api/v1/alerts.cap", fire).content).findall("atom:entry", NS)
    assert ET.tostring(child(entry, "atom:content/cap:alert")) == ET.tostring(root)


def test_later_states_update_or_cancel_the_first_message(api: ApiServer) -> None:
    _, unconfirmed = raise_alert(api.database_url, type="smoke")
    _, false_alarm = raise_alert(api.database_url, type="heat")
    fire = api.key("fire")
    # Read first, so that a message the API kept from before the desk's change would show.
    for alert in (unconfirmed, false_alarm):
        first = ET.fromstring(get(api, f"/api/v1/alerts/{alert.id}/cap", fire).content)
        assert text(first, "cap:msgType") == "Alert"
    feed = ET.fromstring(get(api, "/api/v1/alerts.cap", fire).content)
    assert {text(e, "atom:content/cap:alert/cap:msgType") for e in feed.findall("atom:entry", NS)} == {"Alert"}
    httpx.post(f"{api.url}/api/v1/alerts/{unconfirmed.id}/acknowledge", headers=fire)
    httpx.post(f"{api.url}/api/v1/alerts/{false_alarm.id}/false-alarm", headers=fire)
    acknowledged = ET.fromstring(get(api, f"/api/v1/alerts/{unconfirmed.id}/cap", fire).content)
    cancelled = ET.fromstring(get(api, f"/api/v1/alerts/{false_alarm.id}/cap", fire).content)
    for root in (acknowledged, cancelled):
        check_cap(root)
    assert text(acknowledged, "cap:msgType") == "Update"
    assert text(acknowledged, "cap:info/cap:certainty") == "Likely"
    assert f"urn:patrolnet:alert:{unconfirmed.id}:1:new" in text(acknowledged, "cap:references")
    assert (text(cancelled, "cap:msgType"), text(cancelled, "cap:info/cap:urgency")) == ("Cancel", "Past")
    feed = ET.fromstring(get(api, "/api/v1/alerts.cap", fire).content)
    assert sorted(text(e, "atom:content/cap:alert/cap:msgType") for e in feed.findall("atom:entry", NS)) == [
        "Cancel",
        "Update",
    ]


def test_the_feed_is_an_atom_feed_of_the_same_alerts_as_the_list(api: ApiServer) -> None:
    for hour in range(3):
        raise_alert(api.database_url, ts=datetime(2024, 5, 1, hour, tzinfo=UTC))
    fire = api.key("fire")
    response = get(api, "/api/v1/alerts.cap", fire, limit=2)
    assert response.headers["content-type"] == "application/atom+xml"
    feed = ET.fromstring(response.content)
    assert child(feed, "atom:link").get("href") == "/api/v1/alerts.cap?limit=2", "relative: no public URL set"
    entries = feed.findall("atom:entry", NS)
    listed = [a["id"] for a in get(api, "/api/v1/alerts", fire, limit=2).json()["items"]]
    assert [text(e, "atom:content/cap:alert/cap:incidents") for e in entries] == listed
    for entry in entries:
        assert child(entry, "atom:content").get("type") == "application/cap+xml"
        message = child(entry, "atom:content/cap:alert")
        check_cap(message)
        assert text(entry, "atom:id") == text(message, "cap:identifier")
        # The feed writes each message from the alert's JSON as the database makes it, the single message from
        # the alert's model: the same message both ways.
        alone = get(api, f"/api/v1/alerts/{text(message, 'cap:incidents')}/cap", fire).content
        assert ET.tostring(message) == ET.tostring(ET.fromstring(alone))
    assert get(api, "/api/v1/alerts.cap", fire, colour="red").status_code == 422


def test_each_language_has_its_info_built_from_the_type_and_attributes(api: ApiServer) -> None:
    attributes = {"rule": "night", "zone": "walkway", "class": "person", "duration_s": 95.0, "track_id": 7}
    _, loitering = raise_alert(
        api.database_url, EventKind.SECURITY, EAST.with_device("cam-1"), type="loitering", attributes=attributes,
        title="Loitering: person in walkway for 95 s",
    )  # fmt: skip
    _, unknown = raise_alert(api.database_url, type="new_gadget_fault", title="Gadget 3 reports a fault")
    _, smoke = raise_alert(api.database_url, type="smoke", title="Smoke alarm at Building 5, e-bike shed")
    police, fire = api.key("police"), api.key("fire")
    documents = [
        ET.fromstring(get(api, f"/api/v1/alerts/{a.id}/cap", key).content)
        for a, key in ((loitering, police), (unknown, fire), (smoke, fire))
    ]
    for root in documents:
        check_cap(root)
    [entry] = ET.fromstring(get(api, "/api/v1/alerts.cap", police).content).findall("atom:entry", NS)
    assert ET.tostring(child(entry, "atom:content/cap:alert")) == ET.tostring(documents[0]), "from JSON as from rows"
    heads = [
        {language: (text(i, "cap:event"), text(i, "cap:headline")) for language, i in by_language(root).items()}
        for root in documents
    ]
    assert heads[0] == {
        "zh-CN": ("徘徊", "徘徊：人员在walkway停留95秒"),
        "en-US": ("loitering", "Loitering: person in walkway for 95 s"),
    }
    assert heads[1] == {
        "zh-CN": ("new gadget fault", "Gadget 3 reports a fault"),
        "en-US": ("new gadget fault", "Gadget 3 reports a fault"),
    }, "a type no table knows keeps the edge's title"
    assert heads[2] == {
        "zh-CN": ("烟雾", "烟雾：smoke-1"),
        "en-US": ("smoke", "Smoke alarm at Building 5, e-bike shed"),
    }, "in English the edge's title names the sensor as the site calls it"
    zh = by_language(documents[0])["zh-CN"]
    assert (
        text(zh, "cap:description")
        == "徘徊：人员在walkway停留95秒，地点：cam-1, willow-court, g07, east-gate, riverside；持续中，共1次事件。"
    )
    assert [text(i, "cap:category") for i in by_language(documents[0]).values()] == ["Security", "Security"]


def test_characters_xml_cannot_carry_are_replaced_and_the_feed_stays_readable(api: ApiServer) -> None:
    # A node's title is any string; a bell or a noncharacter in one alert must not make a whole feed page
    # unreadable to a CAP client.
    _, alert = raise_alert(api.database_url, type="smoke", title="Smoke\x07 alarm\x1b[0m at B3\ufffe")
    fire = api.key("fire")
    root = ET.fromstring(get(api, f"/api/v1/alerts/{alert.id}/cap", fire).content)
    check_cap(root)
    assert text(by_language(root)["en-US"], "cap:headline") == "Smoke\ufffd alarm\ufffd[0m at B3\ufffd"
    feed = ET.fromstring(get(api, "/api/v1/alerts.cap", fire).content)
    assert text(feed, "atom:entry/atom:content/cap:alert/cap:incidents") == str(alert.id)


def test_the_feed_writes_a_kept_message_again_after_any_change_to_its_alert(api: ApiServer) -> None:
    # The feed keeps each message under its alert's row version (id and xmin), not its JSON: a change made anywhere
    # (here straight in the database, as ingest or a migration would) must still show in the next page read.
    _, alert = raise_alert(api.database_url, type="smoke", title="Smoke alarm at B3")
    fire = api.key("fire")

    def headlines() -> list[str]:
        feed = ET.fromstring(get(api, "/api/v1/alerts.cap", fire).content)
        messages = feed.findall("atom:entry/atom:content/cap:alert", NS)
        return [text(by_language(m)["en-US"], "cap:headline") for m in messages]

    assert headlines() == headlines() == ["Smoke alarm at B3"]
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET title = 'Smoke alarm at B4' WHERE id = %s", (alert.id,))
    assert headlines() == ["Smoke alarm at B4"]
