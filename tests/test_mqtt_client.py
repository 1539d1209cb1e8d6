"""The project's MQTT client (``alerts.core.mqtt``) against a real Mosquitto: it reads ahead, and decodes MQTT v5
properties through shared tables, without changing what a subscriber receives."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt
from broker_helpers import PLACE_A, SHARE, Probe, running_secure_broker
from conftest import eventually, mqtt_client
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.core.mqtt import READ_AHEAD_BYTES, ReadAhead, SharedTables, make_client
from alerts.core.protocol import uplink_topic
from alerts.intake.broker_auth import node_client_id
from deploy.local.services import Service

BURST = [20] * 300 + [3 * READ_AHEAD_BYTES + 7] + [150] * 300
"""Payload sizes: many packets share one read, one is larger than a read (and than a TLS record)."""


def _publish_properties(i: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = f"c{i}".encode()
    if i % 2:
        props.UserProperty = [("n", str(i))]
    return props


class Burst:
    """Publishes BURST with numbered payloads and properties; takes what arrives, and tells whether it came whole."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, bytes, list[tuple[str, str]]]] = []
        """Each message's payload, correlation data and user properties."""
        self.done = threading.Event()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        props = message.properties
        users = getattr(props, "UserProperty", [])
        self.received.append((bytes(message.payload), getattr(props, "CorrelationData", b""), users))
        if len(self.received) == len(BURST):
            self.done.set()

    def publish(self, publisher: mqtt.Client, topic: str) -> None:
        for i, size in enumerate(BURST):
            payload = (f"{i:06d}".encode() * (size // 6 + 1))[:size]
            publisher.publish(topic, payload, qos=1, properties=_publish_properties(i))
        assert self.done.wait(30), f"{len(self.received)} of {len(BURST)} arrived"

    def check(self) -> None:
        assert [len(payload) for payload, _, _ in self.received] == BURST
        assert [payload[:6] for payload, _, _ in self.received] == [f"{i:06d}".encode() for i in range(len(BURST))]
        assert [correlation for _, correlation, _ in self.received] == [f"c{i}".encode() for i in range(len(BURST))]
        assert [users for _, _, users in self.received] == [[("n", str(i))] if i % 2 else [] for i in range(len(BURST))]


def test_a_burst_of_small_and_large_messages_arrives_whole_in_order_with_its_own_properties(broker: Service) -> None:
    burst = Burst()
    with mqtt_client(broker, "test-read-ahead", "burst/#", burst.on_message) as subscriber:
        assert isinstance(subscriber.socket(), ReadAhead)
        with mqtt_client(broker, "test-burst") as publisher:
            burst.publish(publisher, "burst/x")
    burst.check()


def test_over_tls_a_burst_arrives_whole_in_order_through_the_read_ahead() -> None:
    burst = Burst()
    with running_secure_broker() as broker:
        tls, ca = broker.ports[8883], broker.folder / "ca.crt"
        with (
            Probe(tls, "ingest", cafile=ca) as ingest,
            Probe(tls, "node-a", cafile=ca, client_id=node_client_id("node-a")) as node,
        ):
            sock = ingest.client.socket()
            assert isinstance(sock, ReadAhead) and isinstance(sock.sock, ssl.SSLSocket)
            ingest.client.on_message = burst.on_message
            assert ingest.subscribe(SHARE) == 1
            burst.publish(node.client, uplink_topic(PLACE_A.site, "events"))
    burst.check()


def test_paho_decodes_properties_through_the_shared_tables(broker: Service) -> None:
    arrived: list[Properties] = []

    def keep(client, userdata, message) -> None:
        arrived.append(message.properties)

    with mqtt_client(broker, "test-shared-tables", "tables/#", keep), mqtt_client(broker, "test-pub") as publisher:
        publisher.publish("tables/a", b"1", qos=1, properties=_publish_properties(1))
        publisher.publish("tables/a", b"2", qos=1, properties=_publish_properties(2))
        eventually(lambda: len(arrived) == 2)
    assert _packet.Properties is SharedTables
    assert all(isinstance(props, SharedTables) for props in arrived)
    # The tables are shared; what each packet carried is its own.
    assert arrived[0].names is arrived[1].names
    assert [getattr(props, "UserProperty", None) for props in arrived] == [[("n", "1")], None]


def test_nagles_algorithm_is_off_only_where_asked(broker: Service) -> None:
    flags = {}
    for no_delay in (True, False):
        client, address, props = make_client(broker.url, f"test-no-delay-{no_delay}", no_delay=no_delay)
        client.connect(address.host, address.port, properties=props)
        try:
            sock = client.socket()
            assert isinstance(sock, ReadAhead)
            flags[no_delay] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            client.disconnect()
    assert flags == {True: 1, False: 0}


class Session:
    """A persistent, manually acknowledging subscriber to ``acks/#`` on its own thread's ``loop_forever``, as the
    node's sensor path runs; ``writes`` records each ``send`` of its socket, ``writers`` the threads that made them."""

    def __init__(self, broker: Service) -> None:
        self.mids: list[int] = []
        self.writes: list[bytes] = []
        self.writers: set[threading.Thread] = set()
        subscribed = threading.Event()
        self.client, address, props = make_client(broker.url, "test-acks", persistent=True, manual_ack=True)
        self.client.on_connect = lambda client, *_: client.subscribe("acks/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.mids.append(message.mid)
        self.client.connect(address.host, address.port, clean_start=False, properties=props)
        self.thread = threading.Thread(target=self.client.loop_forever)
        self.thread.start()
        assert subscribed.wait(10)
        sock = self.client.socket()
        assert isinstance(sock, ReadAhead)
        send = sock.send

        def record(data: bytes | bytearray) -> int:
            self.writes.append(bytes(data))
            self.writers.add(threading.current_thread())
            return send(data)

        sock.send = record  # type: ignore[method-assign]  # what paho writes, seen on its way

    def close(self) -> None:
        self.client.disconnect()
        self.thread.join(10)


def test_acknowledgements_held_leave_in_one_write_and_settle_the_session(broker: Service) -> None:
    session = Session(broker)
    with mqtt_client(broker, "test-acks-publisher") as publisher:
        for i in range(200):
            publisher.publish("acks/x", str(i), qos=1)
        eventually(lambda: len(session.mids) == 200)
    held, plain = session.mids[:100], session.mids[100:]
    session.writes.clear()
    for mid in held:  # as the node's sink does, once what the messages said is stored
        session.client.hold_ack(mid, 1)
    assert session.writes == []
    session.client.send_acks()
    eventually(lambda: session.writes)
    assert session.writes == [b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in held)], "together, in order"
    for mid in plain:  # paho's ack() from another thread than the loop's
        session.client.ack(mid, 1)
    eventually(lambda: len(b"".join(session.writes)) == 4 * 200)
    assert b"".join(session.writes) == b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in session.mids)
    assert session.writers == {session.thread}, "written by the loop's thread alone, never the acknowledging one"
    session.close()
    pair = session.client._sockpairW
    assert pair is not None
    pair.close()  # a loop gone: an acknowledgement let go after it fails nobody (the sink has stored the message)
    session.client.hold_ack(1, 1)
    session.client.send_acks()
    # The broker took them all: the session, resumed, holds nothing to send again.
    again = Session(broker)
    time.sleep(1.0)
    again.close()
    assert again.mids == []


def test_messages_reach_on_message_and_per_topic_callbacks_as_paho_sends_them(broker: Service) -> None:
    # The client hands a message straight to on_message while no per-topic callback was added, and through paho's
    # own lookup once one is; an exception in on_message is logged, and the next message still arrives.
    seen: list[tuple[str, bytes]] = []

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        seen.append(("any", bytes(message.payload)))
        if message.payload == b"raise":
            raise RuntimeError("a callback's fault")

    with mqtt_client(broker, "test-callbacks", "cb/#", on_message) as subscriber:
        subscriber.suppress_exceptions = True
        with mqtt_client(broker, "test-callbacks-pub") as publisher:
            for payload in (b"raise", b"1"):
                publisher.publish("cb/a", payload, qos=1)
            eventually(lambda: len(seen) == 2)
            subscriber.message_callback_add("cb/a", lambda c, u, m: seen.append(("cb/a", bytes(m.payload))))
            for topic, payload in (("cb/a", b"2"), ("cb/b", b"3")):
                publisher.publish(topic, payload, qos=1)
            eventually(lambda: len(seen) == 4)
    assert seen == [("any", b"raise"), ("any", b"1"), ("cb/a", b"2"), ("any", b"3")]
