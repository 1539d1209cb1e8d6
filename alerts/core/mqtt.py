"""MQTT plumbing shared by the edge node, the central ingest and the broker admin: URLs and clients.

What travels over MQTT on the uplink (topics, channels, payloads) is ``alerts.core.protocol``'s.

Example:
    >>> parse_url("mqtts://node-7:secret@broker.example:8884")
    BrokerAddress(host='broker.example', port=8884, username='node-7', password='secret', tls=True)
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:  # paho declares it for type checkers only
    from paho.mqtt.client import SocketLike

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_url(url: str) -> BrokerAddress:
    """``mqtt://user:pass@host:1883`` or ``mqtts://host:8883`` into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"not an MQTT URL (mqtt://host:port): {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def _no_delay(client: mqtt.Client, userdata: Any, sock: SocketLike) -> None:
    """Turns Nagle's algorithm off, which paho leaves on: a small packet (a PUBACK, ingest's confirmation, the
    node's next alarm) then waits for the broker's delayed ACK of the one before it, about 40 ms on Linux.
    Measured with bench/bench_sensors.py: the alarm leaving the node, p50 37.7 ms with it on, 7.0 ms off."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    url: str,
    client_id: str,
    *,
    persistent: bool = False,
    manual_ack: bool = False,
    session_expiry_s: int = 3600,
    no_delay: bool = False,
) -> tuple[mqtt.Client, BrokerAddress, Properties]:
    """An MQTT v5 client for ``url``, not yet connected, with the CONNECT properties to use.

    A persistent session keeps the subscriptions and the unacknowledged QoS 1
    messages across reconnects; it needs a session expiry, or the broker drops
    it at the first disconnect. ``no_delay`` turns Nagle's algorithm off (see ``_no_delay``): for the uplink's
    two ends, where publishes and confirmations cross on one connection.
    """
    address = parse_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    if no_delay:
        client.on_socket_open = _no_delay
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    return client, address, props


def connect(client: mqtt.Client, address: BrokerAddress, props: Properties, *, clean_start: bool = True) -> None:
    """Starts the network loop; paho keeps reconnecting on its own if the broker goes away."""
    client.connect_async(address.host, address.port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
