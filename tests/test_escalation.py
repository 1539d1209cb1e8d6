"""Escalation on a real database and real API processes (alerts.notify.escalation): an unacknowledged fire alarm
goes up two levels at its times, exactly once with two API replicas running; an acknowledgement stops it; an
acknowledged alarm left unresolved past its timeout is unacknowledged and escalates again; a robot step reaches
the robot stand-in, mentioning the notified people's mobiles. Chains are set through the admin route with
delays of a second or two, so the tests wait on conditions, never on the defaults' minutes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from api_helpers import EAST, add_person, raise_alert
from conftest import ApiServer, SseReader, eventually

from alerts.core.models import EventKind
from alerts.notify.webhooks import WebhookDispatcher
from deploy.local.robots import RobotStandIn

DESK = {"sub_district": EAST.sub_district, "community": EAST.community}


def set_chains(api: ApiServer, admin: dict[str, str], *chains: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.put(f"{api.url}/api/v1/escalation/chains", headers=admin, json=list(chains))
    assert response.status_code == 200, response.text
    return response.json()


def fire_chain(*steps: tuple[float, list[dict[str, Any]]], **fields: Any) -> dict[str, Any]:
    return {"kind": "fire", "steps": [{"delay_s": d, "targets": t} for d, t in steps], **fields}


def trail(database_url: str, alert_id: UUID) -> list[tuple[str, str, str, str]]:
    """The alert's audit trail: (actor, action, to_status, note), oldest first."""
    with psycopg.connect(database_url) as conn:
        sql = "SELECT actor, action, to_status, note FROM alert_history WHERE alert_id = %s ORDER BY at, id"
        return conn.execute(sql, (alert_id,)).fetchall()


def actions(database_url: str, alert_id: UUID) -> list[str]:
    return [action for _, action, _, _ in trail(database_url, alert_id)]


def act(api: ApiServer, headers: dict[str, str], alert_id: UUID, action: str) -> None:
    response = httpx.post(f"{api.url}/api/v1/alerts/{alert_id}/{action}", headers=headers, json={"note": "on it"})
    assert response.status_code == 200, response.text


def test_the_default_chains_are_the_issues(api: ApiServer) -> None:
    chains = httpx.get(f"{api.url}/api/v1/escalation/chains", headers=api.key("admin")).json()
    steps = {c["kind"]: [(s["delay_s"], s["targets"]) for s in c["steps"]] for c in chains}
    community = {"type": "desk", "level": "community", "role": None}
    brigade = {"type": "desk", "level": "district", "role": "fire"}
    higher = [{"type": "desk", "level": "sub_district", "role": None}, brigade]
    assert steps == {
        "fire": [(60, [community]), (180, higher)],
        "security": [(300, [community])],
        "trouble": [(1800, [community])],
    }


def test_chains_are_checked_and_set_only_by_a_district_admin(api: ApiServer) -> None:
    admin = api.key("admin")
    url = f"{api.url}/api/v1/escalation/chains"
    desk = [{"type": "desk", "level": "community"}]
    refused = {
        "unordered": [fire_chain((5, desk), (2, desk))],
        "twice": [fire_chain((5, desk)), fire_chain((9, desk))],
        "no person": [fire_chain((5, [{"type": "person", "person_id": "00000000-0000-0000-0000-000000000001"}]))],
        "no robot": [fire_chain((5, [{"type": "robot", "webhook_id": "00000000-0000-0000-0000-000000000002"}]))],
        "no target": [fire_chain((5, []))],
    }
    for why, body in refused.items():
        response = httpx.put(url, headers=admin, json=body)
        assert response.status_code == 422, (why, response.text)
    scoped = httpx.put(url, headers=api.key("admin", community=EAST.community), json=[fire_chain((5, desk))])
    assert scoped.status_code == 403, scoped.text
    assert httpx.put(url, headers=api.key("fire"), json=[]).status_code == 403
    assert len(httpx.get(url, headers=admin).json()) == 3, "nothing refused changed the chains"
    [stored] = set_chains(api, admin, fire_chain((5, desk), repeat=2, ack_timeout_s=60))
    assert stored["repeat"] == 2 and UUID(stored["id"])


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[ApiServer, ApiServer]]:
    with ApiServer(database_url) as one, ApiServer(database_url) as two:
        yield one, two


def test_an_unacknowledged_fire_alarm_escalates_two_levels_once_with_two_replicas(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    one, two = replicas
    admin = one.key("admin")
    add_person(one, admin, "desk-east", "fire", name="Wang Community", on_duty=True, **DESK)
    add_person(one, admin, "desk-off", "fire", name="Off Duty", on_duty=False, **DESK)
    add_person(one, admin, "desk-river", "fire", name="Zhao Subdistrict", on_duty=True,
               sub_district=EAST.sub_district)  # fmt: skip
    add_person(one, admin, "brigade", "fire", name="Chen Brigade", on_duty=True)
    set_chains(
        one,
        admin,
        fire_chain(
            (1, [{"type": "desk", "level": "community"}]),
            (2.5, [{"type": "desk", "level": "sub_district"}, {"type": "desk", "level": "district", "role": "fire"}]),
        ),
    )
    desk = one.key("fire", community=EAST.community)
    streams = [SseReader(f"{api.url}/api/v1/alerts/stream", desk) for api in (one, two)]
    with streams[0] as first, streams[1] as second:
        _, alert = raise_alert(one.database_url)
        eventually(lambda: actions(one.database_url, alert.id).count("escalate") == 2, timeout=20)
        got = [*first.drain(1.5), *second.drain(0.5)]
    mine = Counter(change for _, change, data in got if data["id"] == str(alert.id))
    print(f"2 replicas: per change on the two streams {dict(mine)}")
    assert mine == {"raised": 2, "escalated": 4}, "each change once on each replica's stream"
    entries = trail(one.database_url, alert.id)
    assert [(actor, action, to) for actor, action, to, _ in entries] == [("escalation", "escalate", "new")] * 2
    assert entries[0][3] == "step 1 of 2, to east-gate fire desk: Wang Community"
    assert entries[1][3] == "step 2 of 2, to riverside fire desk: Zhao Subdistrict; district fire desk: Chen Brigade"
    with psycopg.connect(one.database_url) as conn:
        left = conn.execute("SELECT step, due_at FROM alert_escalations WHERE alert_id = %s", (alert.id,)).fetchone()
    assert left == (1, None), "the chain ran out: nothing more is due"


def test_an_acknowledgement_stops_it_and_a_timed_out_one_escalates_again(api: ApiServer) -> None:
    admin = api.key("admin")
    desk = api.key("fire", community=EAST.community)
    grid = [{"type": "grid_team"}]
    set_chains(api, admin, fire_chain((1, grid), (2, grid), ack_timeout_s=2))
    _, acked = raise_alert(api.database_url)
    act(api, desk, acked.id, "acknowledge")
    act(api, desk, acked.id, "resolve")  # resolved within its timeout: done for good
    with SseReader(f"{api.url}/api/v1/alerts/stream", desk) as stream:
        _, late = raise_alert(api.database_url, place=EAST.with_device("smoke-2"))
        eventually(lambda: actions(api.database_url, late.id) == ["escalate"], timeout=15)
        act(api, desk, late.id, "acknowledge")
        timed_out = ["escalate", "acknowledge", "unacknowledge", "escalate", "escalate"]
        eventually(lambda: actions(api.database_url, late.id) == timed_out, timeout=20)
        changes = [change for _, change, data in stream.drain(1.0) if data["id"] == str(late.id)]
    assert changes == ["raised", "escalated", "acknowledged", "unacknowledged", "escalated", "escalated"]
    assert actions(api.database_url, acked.id) == ["acknowledge", "resolve"], "acknowledged in time: no step"
    entries = trail(api.database_url, late.id)
    assert entries[2][:3] == ("escalation", "unacknowledge", "new")
    assert entries[3][3] == "step 1 of 2, to grid east-gate/g07 team: nobody on duty", "no team: said so"
    with psycopg.connect(api.database_url) as conn:
        status = conn.execute("SELECT status FROM alerts WHERE id = %s", (late.id,)).fetchone()
        rows = conn.execute("SELECT alert_id FROM alert_escalations").fetchall()
    assert status == ("new",) and rows == [(late.id,)], "the resolved alarm's escalation is gone"


def test_a_robot_step_reaches_the_robot_mentioning_the_people_notified(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATROLNET_WEBHOOK_ALLOW", "127.0.0.1")
    with ApiServer(database_url) as api, RobotStandIn() as stand_in:
        admin = api.key("admin")
        url = stand_in.add("wecom", "escalation-robot")
        # Registered for trouble only: what it gets of a fire alarm is the escalation's message.
        body = {
            "url": url,
            "format": "wecom",
            "message": "text",
            "kinds": ["trouble"],
            "mention_mobiles": ["13900000000"],
        }
        hook = httpx.post(f"{api.url}/api/v1/webhooks", headers=admin, json=body)
        assert hook.status_code == 201, hook.text
        person = add_person(api, admin, "lead-east", "fire", name="Li Lead", phone="138-0000-0001")["person"]
        targets = [{"type": "person", "person_id": person["id"]}, {"type": "robot", "webhook_id": hook.json()["id"]}]
        set_chains(api, admin, fire_chain((1, targets)))
        _, alert = raise_alert(database_url, kind=EventKind.FIRE)
        dispatcher = WebhookDispatcher(database_url, name="escalation-robots", poll_s=0.05, allow="127.0.0.1")
        dispatcher.start()
        try:
            eventually(lambda: stand_in.messages("escalation-robot"), timeout=15)
        finally:
            dispatcher.stop()
    [received] = stand_in.messages("escalation-robot")
    text = received.body["text"]
    assert "状态 Change: 已升级 escalated" in text["content"]
    assert text["mentioned_mobile_list"] == ["13900000000", "13800000001"]
    assert trail(database_url, alert.id)[0][3] == f"step 1 of 1, to person: Li Lead; wecom robot {hook.json()['id']}"


def test_a_chain_it_cannot_read_holds_only_its_own_alerts(api: ApiServer) -> None:
    set_chains(api, api.key("admin"), fire_chain((1, [{"type": "grid_team"}])))
    with psycopg.connect(api.database_url, autocommit=True) as conn:  # written past the route's checks
        conn.execute(
            "INSERT INTO escalation_chains (kind, steps) VALUES ('security', %s)",
            ('[{"delay_s": 0, "targets": [{"type": "pager"}]}]',),
        )
    _, poison = raise_alert(api.database_url, kind=EventKind.SECURITY, place=EAST.with_device("cam-1"))
    _, fire = raise_alert(api.database_url)
    eventually(lambda: actions(api.database_url, fire.id) == ["escalate"], timeout=15)
    assert actions(api.database_url, poison.id) == []


def look_at(database_url: str, alert_id: UUID) -> tuple[Any, ...]:
    """(look_at, due_at, the alert's status_at) of an alert's escalation; () once it is gone."""
    with psycopg.connect(database_url) as conn:
        sql = """SELECT e.look_at, e.due_at, a.status_at FROM alert_escalations e JOIN alerts a ON a.id = e.alert_id
WHERE e.alert_id = %s"""
        return conn.execute(sql, (alert_id,)).fetchone() or ()


def test_the_runner_looks_at_a_row_only_when_its_time_comes_or_its_alert_changes(api: ApiServer) -> None:
    # The runner reads only rows whose look_at has come (by an index): a year of alerts whose chains ran out, or
    # that wait acknowledged, costs its pass nothing until one of them changes.
    admin = api.key("admin")
    desk = api.key("fire", community=EAST.community)
    set_chains(api, admin, fire_chain((1, [{"type": "grid_team"}]), ack_timeout_s=600))
    _, alert = raise_alert(api.database_url)
    # Stored new: looked at once at once, then when its first step is due.
    eventually(lambda: (row := look_at(api.database_url, alert.id))[0] == row[1] is not None)
    eventually(lambda: actions(api.database_url, alert.id) == ["escalate"], timeout=15)
    eventually(lambda: look_at(api.database_url, alert.id)[:2] == (None, None))  # the chain ran out
    act(api, desk, alert.id, "acknowledge")
    # The acknowledgement's trigger makes it now (its status_at); the runner's look then sets its timeout.
    looked, _, status_at = eventually(lambda: (row := look_at(api.database_url, alert.id))[0] > row[2] and row)
    assert looked == status_at + timedelta(seconds=600), "acknowledged: looked at again when it times out"
    act(api, desk, alert.id, "resolve")
    eventually(lambda: look_at(api.database_url, alert.id) == ())
    assert actions(api.database_url, alert.id) == ["escalate", "acknowledge", "resolve"]
