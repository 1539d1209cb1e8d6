"""The project's MQTT client (``alerts.core.mqtt``) against a real Mosquitto: it reads ahead, and decodes MQTT v5
properties through shared tables, without changing what a subscriber receives."""

from __future__ import annotations

import socket
import threading

from conftest import eventually, mqtt_client
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.core.mqtt import READ_AHEAD_BYTES, ReadAhead, SharedTables, make_client
from deploy.local.services import Service


def _publish_properties(i: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = f"c{i}".encode()
    if i % 2:
        props.UserProperty = [("n", str(i))]
    return props


def test_a_burst_of_small_and_large_messages_arrives_whole_in_order_with_its_own_properties(broker: Service) -> None:
    # Many packets share one read; one is larger than a read and arrives over several.
    sizes = [20] * 300 + [3 * READ_AHEAD_BYTES + 7] + [150] * 300
    received: list[tuple[bytes, bytes, list[tuple[str, str]]]] = []
    done = threading.Event()

    def on_message(client, userdata, message) -> None:
        props = message.properties
        received.append((message.payload, props.CorrelationData, getattr(props, "UserProperty", [])))
        if len(received) == len(sizes):
            done.set()

    with mqtt_client(broker, "test-read-ahead", "burst/#", on_message) as subscriber:
        assert isinstance(subscriber.socket(), ReadAhead)
        with mqtt_client(broker, "test-burst") as publisher:
            for i, size in enumerate(sizes):
                payload = (f"{i:06d}".encode() * (size // 6 + 1))[:size]
                publisher.publish("burst/x", payload, qos=1, properties=_publish_properties(i))
            assert done.wait(30), f"{len(received)} of {len(sizes)} arrived"

    assert [len(payload) for payload, _, _ in received] == sizes
    assert [payload[:6] for payload, _, _ in received] == [f"{i:06d}".encode() for i in range(len(sizes))]
    assert [correlation for _, correlation, _ in received] == [f"c{i}".encode() for i in range(len(sizes))]
    assert [users for _, _, users in received] == [[("n", str(i))] if i % 2 else [] for i in range(len(sizes))]


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
