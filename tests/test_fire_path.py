"""The fire path end to end, on a real broker, a real database and the real API.

zigbee2mqtt smoke detector --MQTT--> edge node --uplink--> ingest --> PostgreSQL --> API list and SSE.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import ApiServer, SseReader, edge_and_ingest, eventually
from fire_helpers import ALARM, CLEAR, SMOKE_TOPIC, node_config, publish

from deploy.local.services import Service
from edge.node import EdgeNode


@pytest.fixture
def pipeline(broker: Service, database_url: str, tmp_path: Path) -> Iterator[EdgeNode]:
    with edge_and_ingest(node_config(broker.url, tmp_path / "outbox.sqlite3"), broker, database_url) as node:
        yield node


def list_alerts(api: ApiServer, headers: dict[str, str], **params: str) -> list[dict]:
    response = httpx.get(f"{api.url}/api/v1/alerts", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_smoke_alarm_reaches_the_fire_desk_and_clears(pipeline, sensors, api: ApiServer) -> None:
    fire = api.key("fire")
    with SseReader(f"{api.url}/api/v1/alerts/stream", fire) as stream:
        assert stream.status == 200
        publish(sensors, ALARM)

        seq, change, alert = stream.next()
        assert change == "raised"
        assert alert["kind"] == "fire" and alert["type"] == "smoke" and alert["active"] is True
        assert alert["route"] == "fire" and alert["severity"] == "critical"
        assert alert["place"] == {
            "sub_district": "riverside",
            "community": "east-gate",
            "grid": "g07",
            "site": "willow-court",
            "device": "smoke-b3-stair",
        }
        assert alert["title"] == "Smoke alarm at Building 3, stairwell"
        assert alert["readings"]["battery"] == 87.0 and alert["confirmed"] is False

        listed = list_alerts(api, fire)
        assert [a["id"] for a in listed] == [alert["id"]]
        assert listed[0]["active"] is True

        # The detector repeating its alarm is the same situation, not a new alert.
        publish(sensors, ALARM)
        publish(sensors, CLEAR)
        cleared_seq, change, cleared = stream.next()
        assert change == "cleared" and int(cleared_seq) > int(seq)
        assert cleared["id"] == alert["id"] and cleared["active"] is False and cleared["cleared_at"]

    listed = list_alerts(api, fire)
    assert len(listed) == 1 and listed[0]["active"] is False
    assert list_alerts(api, fire, active="true") == []
    assert pipeline.counts["events"] == 2


def test_police_and_other_places_do_not_see_the_fire_alarm(pipeline, sensors, api: ApiServer) -> None:
    publish(sensors, ALARM)
    fire = api.key("fire")
    eventually(lambda: list_alerts(api, fire))
    assert list_alerts(api, api.key("police")) == []
    assert list_alerts(api, api.key("fire", community="another-community")) == []
    assert len(list_alerts(api, api.key("fire", community="east-gate"))) == 1
    assert httpx.get(f"{api.url}/api/v1/alerts").status_code == 401
    assert httpx.get(f"{api.url}/api/v1/alerts", headers={"Authorization": "Bearer pn_nope"}).status_code == 401
    forbidden = httpx.get(f"{api.url}/api/v1/alerts", headers=api.key("police"), params={"kind": "fire"})
    assert forbidden.status_code == 403 and "fire" in forbidden.json()["detail"]


def test_garbage_is_dead_lettered_and_the_next_alarm_still_arrives(
    pipeline, sensors, api: ApiServer, database_url: str
) -> None:
    publish(sensors, b"\x00not json at all{")
    publish(sensors, {"smoke": "yes", "battery": 87})
    publish(sensors, ALARM)

    fire = api.key("fire")
    alerts = eventually(lambda: list_alerts(api, fire))
    assert alerts[0]["type"] == "smoke" and alerts[0]["active"] is True

    def dead_letters() -> list[tuple]:
        with psycopg.connect(database_url) as conn:
            # The node's own: an ingest that does not know the status channel yet letters the node's status.
            return conn.execute(
                "SELECT topic, payload, reason, source FROM dead_letters WHERE topic LIKE 'zigbee2mqtt/%' ORDER BY ts"
            ).fetchall()

    letters = eventually(lambda: len(dead_letters()) == 2 and dead_letters())
    assert [(topic, bytes(payload)) for topic, payload, _, _ in letters] == [
        (SMOKE_TOPIC, b"\x00not json at all{"),
        (SMOKE_TOPIC, b'{"smoke": "yes", "battery": 87}'),
    ]
    assert letters[0][2].startswith("not JSON")
    assert "smoke" in letters[1][2] and "bool" in letters[1][2]
    assert {source for *_, source in letters} == {"test-node"}
    assert pipeline.counts["dead_letters"] == 2
