"""Two API replicas on one database, as behind a load balancer: an alert ingested once, through a real broker
and a real ingest worker, arrives on both replicas' streams once each, and so does each later change."""

from __future__ import annotations

from collections import Counter

from api_helpers import EAST
from conftest import ApiServer, SseReader, mqtt_client

from alerts.core.models import Event, EventKind, EventState
from alerts.core.policy import AlertPolicy
from alerts.intake.writer import IngestWorker
from deploy.local.services import Service


def test_an_alert_ingested_once_arrives_on_each_replicas_stream_once(broker: Service, database_url: str) -> None:
    worker = IngestWorker(broker.url, database_url, name="replicas-ingest")
    worker.start()
    assert worker.wait_ready()
    policy = AlertPolicy()
    start = Event(kind=EventKind.FIRE, type="smoke", place=EAST, source="node-1")
    end = Event(kind=EventKind.FIRE, type="smoke", place=EAST, source="node-1", state=EventState.END)
    raised, cleared = policy.apply(start), policy.apply(end)
    assert raised is not None and cleared is not None, "the start raises an alert and the end clears it"
    one, two = ApiServer(database_url), ApiServer(database_url)
    try:
        with one, two, mqtt_client(broker, "edge-1") as edge:
            desk = one.key("fire", community=EAST.community)  # one key table: valid on both
            streams = [SseReader(f"{api.url}/api/v1/alerts/stream", desk) for api in (one, two)]
            with streams[0] as first, streams[1] as second:
                assert (first.status, second.status) == (200, 200)
                topic = f"patrolnet/v1/{EAST.site}"
                for message, channel in ((start, "events"), (raised, "alerts"), (raised, "alerts")):  # redelivered
                    edge.publish(f"{topic}/{channel}", message.model_dump_json(), qos=1).wait_for_publish(10)
                got = [first.next(15), second.next(15)]
                edge.publish(f"{topic}/events", end.model_dump_json(), qos=1).wait_for_publish(10)
                edge.publish(f"{topic}/alerts", cleared.model_dump_json(), qos=1).wait_for_publish(10)
                got += [first.next(15), second.next(15)]
                got += first.drain(3.0) + second.drain(0.5)
    finally:
        worker.stop()
    seen = Counter((change, data["id"], data["revision"]) for _, change, data in got)
    print(f"sent 2 changes (3 alert copies), 2 replicas: received {sum(seen.values())}, per change {dict(seen)}")
    assert seen == {("raised", str(raised.id), 1): 2, ("cleared", str(raised.id), 2): 2}
    # Both replicas number the changes alike, so a client may resume on either.
    ids = sorted(i for i, _, _ in got)
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
