"""A message the central broker refuses for good (a site role made before its channel existed) becomes a dead letter
at once and holds no alarm behind it; ``patrolnet broker sync-roles`` gives old roles the new channels. Against the
central broker from its shipped config, with the dynamic-security plugin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_helpers import Probe, SecureBroker, patrolnet, secure_central
from conftest import eventually

from alerts.core.models import DeadLetter
from alerts.core.protocol import UPLINK_FILTER, uplink_topic
from alerts.intake.broker_auth import BrokerAdmin, node_client_id, site_role_name
from edge.outbox import MAX_BACKOFF_S, Spool, Uplink

SITE = "willow-court"
SNAPSHOT, ALERTS, LETTERS = (uplink_topic(SITE, channel) for channel in ("snapshot", "alerts", "deadletters"))
PROMPTLY_S = 5.0


@pytest.fixture
def central() -> Iterator[SecureBroker]:
    broker = secure_central({"node-a": SITE}, monitor=True)
    try:
        yield broker
    finally:
        broker.service.stop()


def _revoke(broker: SecureBroker, *topics: str) -> None:
    """Makes the site's role what an older release made: without these channels."""
    with BrokerAdmin(broker.url("admin")) as control:
        control.run([{"command": "removeRoleACL", "rolename": site_role_name(SITE), "acltype": "publishClientSend",
                      "topic": topic} for topic in topics])  # fmt: skip


def _arrived(monitor: Probe, topic: str) -> list[bytes]:
    return [payload for got, payload in list(monitor.messages) if got == topic]


def _alarms_promptly(uplink: Uplink, monitor: Probe, tag: str, count: int = 5) -> float:
    """Sends ``count`` alarms; the seconds until the monitor had them all (failing past ``PROMPTLY_S``)."""
    sent = [f"{tag}-{n}".encode() for n in range(count)]
    start = time.monotonic()
    for payload in sent:
        uplink.send(ALERTS, payload)
    eventually(lambda: set(sent) <= set(_arrived(monitor, ALERTS)), timeout=PROMPTLY_S)
    return time.monotonic() - start


def test_a_channel_the_role_lacks_is_dead_lettered_once_and_alarms_behind_it_pass(
    central: SecureBroker, tmp_path: Path, database_url: str
) -> None:
    _revoke(central, SNAPSHOT)
    spool = Spool(tmp_path / "outbox.sqlite3")
    url = f"mqtt://node-a:node-a-secret@127.0.0.1:{central.ports[1883]}"
    uplink = Uplink(spool, url, client_id=node_client_id("node-a"))
    with Probe(central.ports[1883], "monitor", "monitor-secret") as monitor:
        assert monitor.subscribe(UPLINK_FILTER) == 1
        uplink.start()
        try:
            uplink.send(SNAPSHOT, b"a picture the role does not allow")
            eventually(lambda: uplink.refused == 1, timeout=PROMPTLY_S)
            first = _alarms_promptly(uplink, monitor, "behind-the-refusal")
            letter = DeadLetter.model_validate_json(eventually(lambda: _arrived(monitor, LETTERS))[0])
            assert letter.topic == SNAPSHOT and letter.payload == b"a picture the role does not allow"
            assert letter.reason == "uplink: the broker refused it: Not authorized" and letter.source == "uplink"
            eventually(lambda: spool.pending() == 0)
            # Nothing sent again: a loop would have been refused again after its first backoff (1 s).
            time.sleep(2.5)
            assert (uplink.refused, uplink.rejected, uplink.dropped) == (1, 1, 0)
            assert len(_arrived(monitor, LETTERS)) == 1 and _arrived(monitor, SNAPSHOT) == []
            assert len(_arrived(monitor, ALERTS)) == 5 and spool.pending() == 0

            # A dead letter refused too (its channel revoked as well) is dropped and counted, not looped.
            _revoke(central, LETTERS)
            uplink.send(SNAPSHOT, b"a second picture")
            second = _alarms_promptly(uplink, monitor, "behind-the-dropped-letter")
            eventually(lambda: uplink.dropped == 1)
            time.sleep(2.5)
            assert (uplink.refused, uplink.rejected, uplink.dropped) == (3, 3, 1)
            assert spool.pending() == 0 and len(_arrived(monitor, LETTERS)) == 1

            # The operator's upgrade step: the old role gets the channels of this release, and says which.
            synced = patrolnet(central, database_url, "sync-roles")
            assert synced.returncode == 0, synced.stderr
            assert synced.stdout == f"{SITE}: {LETTERS}, {SNAPSHOT}\n"
            again = patrolnet(central, database_url, "sync-roles")
            assert again.returncode == 0 and again.stdout == f"{SITE}: up to date\n"
            uplink.send(SNAPSHOT, b"a picture after the upgrade")
            eventually(lambda: _arrived(monitor, SNAPSHOT) == [b"a picture after the upgrade"], timeout=PROMPTLY_S)
            assert uplink.refused == 3 and spool.pending() == 0
        finally:
            uplink.stop()
    print(f"alarms behind a refused message: all 5 in {first:.2f} s; behind a dropped dead letter: {second:.2f} s "
          f"(backoff up to {MAX_BACKOFF_S:g} s before)")  # fmt: skip


def test_adding_a_node_brings_its_sites_old_role_up_to_date(central: SecureBroker) -> None:
    _revoke(central, SNAPSHOT)
    with BrokerAdmin(central.url("admin")) as control:
        control.add_node(SITE, "node-a2", "a2-secret")
        acls = control.run([{"command": "getRole", "rolename": site_role_name(SITE)}])[0]["data"]["role"]["acls"]
    assert [acl["topic"] for acl in acls].count(SNAPSHOT) == 1
    with Probe(central.ports[1883], "node-a", "node-a-secret", client_id=node_client_id("node-a")) as node:
        assert node.publish(SNAPSHOT, b"{}") in (0, 16)
