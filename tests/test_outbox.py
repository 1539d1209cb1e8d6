"""The edge outbox loses nothing while the uplink is down, even across a node restart."""

from __future__ import annotations

from pathlib import Path

import psycopg
from conftest import _service_folder, eventually, mqtt_client
from fire_helpers import ALARM, node_config, publish

from alerts.writer import IngestWorker
from deploy.local.services import Service, free_port, start_mosquitto
from edge.node import EdgeNode
from edge.outbox import Spool


def test_alarm_raised_while_the_uplink_is_down_arrives_after_a_node_restart(
    broker: Service, database_url: str, tmp_path: Path, monkeypatch
) -> None:
    central_port = free_port()
    monkeypatch.setenv("PATROLNET_UPLINK_URL", f"mqtt://127.0.0.1:{central_port}")
    spool = tmp_path / "outbox.sqlite3"
    with mqtt_client(broker, "test-zigbee2mqtt") as sensor:
        node = EdgeNode(node_config(broker.url, spool))
        node.start()
        assert node.wait_ready()
        publish(sensor, ALARM)
        eventually(lambda: node.counts["alerts"] == 1)
        node.stop()
        # readings, the event and the alert: all still on disk, nothing acknowledged.
        assert Spool(spool).pending() == 3

        with start_mosquitto(_service_folder("patrolnet-central-"), port=central_port) as central:
            worker = IngestWorker(central.url, database_url, name="test-ingest")
            worker.start()
            assert worker.wait_ready()
            restarted = EdgeNode(node_config(broker.url, spool))
            restarted.start()
            try:
                eventually(lambda: Spool(spool).pending() == 0)

                def stored() -> tuple:
                    with psycopg.connect(database_url) as conn:
                        return conn.execute("SELECT type, active, site, device FROM alerts").fetchall()

                assert eventually(stored) == [("smoke", True, "willow-court", "smoke-b3-stair")]
            finally:
                restarted.stop()
                worker.stop()
