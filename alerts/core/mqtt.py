"""MQTT plumbing shared by the edge node, the central ingest and the broker admin: URLs and clients.

What travels over MQTT on the uplink (topics, channels, payloads) is ``alerts.core.protocol``'s.

Example:
    >>> parse_url("mqtts://node-7:secret@broker.example:8884")
    BrokerAddress(host='broker.example', port=8884, username='node-7', password='secret', tls=True)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
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


READ_AHEAD_BYTES = 65_536
READ_BURST = 32
"""Packets read ahead that the client handles at one turn of its loop, at most (see ``Client.loop_read``)."""


class ReadAhead:
    """A connected socket that paho reads through, one system call for many packets.

    paho reads a packet in three or four ``recv`` calls (its first byte, each byte of its length, then the rest),
    each a system call that lets go of the GIL and waits to take it back from the node's other threads. Here one
    call fetches what the kernel holds, up to ``READ_AHEAD_BYTES``, and paho's reads are served from it;
    ``pending`` tells paho's loop that bytes wait here (as an ``ssl.SSLSocket`` does for what it decrypted), so it
    reads them without waiting in ``select``. Writes and everything else go straight to the socket.

    >>> import socket
    >>> near, far = socket.socketpair()
    >>> far.sendall(b"\\x30\\x03abc\\x30")
    >>> sock = ReadAhead(near)
    >>> sock.recv(1), sock.pending(), sock.recv(1), sock.recv(10), sock.pending()
    (b'0', 5, b'\\x03', b'abc0', 0)
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        if self._at == len(self._buffer):
            # Raises as the socket does: nothing to read yet (BlockingIOError, ssl.SSLWantReadError), or broken.
            data = self.sock.recv(max(size, READ_AHEAD_BYTES))
            if len(data) <= size:
                return data
            self._buffer, self._at = data, 0
        chunk = self._buffer[self._at : self._at + size]
        self._at += len(chunk)
        return chunk

    def pending(self) -> int:
        tls = getattr(self.sock, "pending", None)
        return len(self._buffer) - self._at + (tls() if tls is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def close(self) -> None:
        self.sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


_SHARED = ("types", "names", "properties")
_OWN = ("packetType", *_SHARED)
"""What every ``Properties`` holds besides the properties a packet carries (paho's ``privateVars``)."""


class SharedTables(Properties):
    """paho's MQTT v5 ``Properties`` with its three lookup tables built once, not for every packet it decodes.

    paho builds them (27 property names, 27 property types) in every ``Properties()``: 11 us of the 17 that decoding
    one sensor message took, and the node decodes thousands a second. Nothing changes them after, so every
    instance shares the ones built here; what a packet carries is set, read and cleared as paho does.
    ``alerts.core.mqtt`` has paho decode through this class (``paho.mqtt._packet.Properties``), in every client
    of the process.

    >>> props = SharedTables(PacketTypes.PUBLISH)
    >>> props.unpack(b"\\x05\\x09\\x00\\x02id")[0].CorrelationData, props.names is SharedTables(3).names
    (b'id', True)
    """

    _shared = Properties(PacketTypes.PUBLISH)

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        for table in _SHARED:
            object.__setattr__(self, table, getattr(self._shared, table))

    def clear(self) -> None:
        # paho's walks all 27 names for one set; a new instance has none.
        for name in [name for name in vars(self) if name not in _OWN]:
            delattr(self, name)


_packet.Properties = SharedTables  # type: ignore[misc]  # paho looks it up by this name

_PUBACK = struct.Struct("!BBH")
"""A PUBACK with no reason code (success) and no properties: type, remaining length 2, packet id."""


class Client(mqtt.Client):
    """paho's client on a ``ReadAhead`` socket; ``no_delay`` turns Nagle's algorithm off, which paho leaves on:
    a small packet (a PUBACK, ingest's confirmation, the node's next alarm) then waits for the broker's delayed
    ACK of the one before it, about 40 ms on Linux. Measured with bench/bench_sensors.py: the alarm leaving the
    node, p50 37.7 ms with it on, 7.0 ms off. It also handles the packets read ahead in bursts (``loop_read``) and
    sends acknowledgements together (``hold_ack``, ``send_acks``)."""

    no_delay = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[int] = []
        """Packet ids of acknowledgements held for ``send_acks``."""
        self._acks_lock = threading.Lock()
        self._filtered = False
        """Whether a per-topic callback was ever added (``message_callback_add``)."""

    def hold_ack(self, mid: int, qos: int) -> None:
        """Holds the acknowledgement of a message (QoS 1 when the client acknowledges by hand) for ``send_acks``.

        paho writes each PUBACK on its own: a ``send`` a message, which the broker reads alone. The node's sink
        lets a hundred sensor messages go at once after one commit, ingest a batch after its: held, then sent,
        they leave in one ``send``, in the order held (which MQTT asks for).
        """
        if not (self._manual_ack and qos == 1):
            super().ack(mid, qos)
            return
        with self._acks_lock:
            self._held.append(mid)

    def send_acks(self) -> None:
        """Queues the acknowledgements held as one packet, after whatever was queued before, and wakes the network
        loop to write it (a byte on paho's socket pair).

        Only the loop's thread writes where it runs: paho's own queueing also writes from the caller's thread when
        the loop is ``loop_forever`` on a thread of the caller's (the node's sensor path), and two writers can cut
        into each other's packets when the socket takes only part of one. Without a loop of paho's, paho's way.
        """
        with self._acks_lock:
            mids, self._held = self._held, []
        if not mids:
            return
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        wake = self._sockpairW
        if wake is None:
            self._packet_queue(mqtt.PUBACK, packet, mids[-1], 1)
            return
        self._out_packet.append(
            {
                "command": mqtt.PUBACK,
                "mid": mids[-1],
                "qos": 1,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": None,
            }
        )
        # A full pair has woken the loop already; a closed one has no loop to wake, and the broker sends what was not
        # acknowledged again to the next session. Neither may fail the caller: the sink has stored the messages.
        with contextlib.suppress(OSError):
            wake.send(mqtt.sockpair_data)

    def ack(self, mid: int, qos: int) -> mqtt.MQTTErrorCode:
        """paho's ``ack``, through ``hold_ack`` and ``send_acks``."""
        self.hold_ack(mid, qos)
        self.send_acks()
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: mqtt.CallbackOnMessage) -> None:
        self._filtered = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # paho looks every message's topic up in its tree of per-topic callbacks (decoding the topic twice for
        # it), 5% of the node's receiving thread; with none added, a message goes to on_message as paho sends it.
        if self._filtered:
            super()._handle_on_message(message)
            return
        on_message = self.on_message
        if on_message is None:
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # paho handles one packet, then asks select() again, which lets go of the GIL; taking it back from the
        # node's other threads is paid for every sensor message. Packets already read ahead go on being handled,
        # up to READ_BURST: then the loop comes round (writes, keepalive) and other threads have their turn.
        rc = super().loop_read(max_packets)
        for _ in range(READ_BURST):
            if rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(self._sock, ReadAhead):
                break
            if not self._sock.pending():
                break
            rc = super().loop_read(1)
        return rc

    def loop_forever(self, *args: Any, **kwargs: Any) -> mqtt.MQTTErrorCode:
        # The socket pair that paho's loop_start() and loop() make, and loop_forever() alone does not: other
        # threads' acknowledgements (the node's sink's) wake the loop through it.
        if self._sockpairR is None:
            self._sockpairR, self._sockpairW = mqtt._socketpair_compat()
        return super().loop_forever(*args, **kwargs)

    def reconnect(self) -> mqtt.MQTTErrorCode:
        # paho forgets what it had still to write (its packet ids may name other messages on the new connection).
        with self._acks_lock:
            self._held = []
        return super().reconnect()

    def _create_socket(self) -> SocketLike:
        # paho's own hook for the socket it connects through (its websocket transport wraps it there too).
        sock = super()._create_socket()
        if not isinstance(sock, socket.socket):
            return sock
        if self.no_delay and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return ReadAhead(sock)


def make_client(
    url: str,
    client_id: str,
    *,
    persistent: bool = False,
    manual_ack: bool = False,
    session_expiry_s: int = 3600,
    no_delay: bool = False,
) -> tuple[Client, BrokerAddress, Properties]:
    """An MQTT v5 client for ``url``, not yet connected, with the CONNECT properties to use.

    A persistent session keeps the subscriptions and the unacknowledged QoS 1
    messages across reconnects; it needs a session expiry, or the broker drops
    it at the first disconnect. ``no_delay`` turns Nagle's algorithm off (see ``Client``): for the uplink's
    two ends, where publishes and confirmations cross on one connection.
    """
    address = parse_url(url)
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    client.no_delay = no_delay
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    props = Properties(PacketTypes.CONNECT)
    if persistent:
        props.SessionExpiryInterval = session_expiry_s
    return client, address, props


def connect(client: mqtt.Client, address: BrokerAddress, props: Properties, *, clean_start: bool = True) -> None:
    """Starts the network loop; paho keeps reconnecting on its own if the broker goes away."""
    client.connect_async(address.host, address.port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
