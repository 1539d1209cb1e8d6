"""The uplink protocol between edge nodes and central ingest: topics, channels, and what each channel carries.

Topics are versioned: ``patrolnet/v1/<site>/<channel>``. The site in the topic is the sender's identity (its
broker credentials cover only that site). Each channel carries one JSON payload type (``PAYLOADS``):

- ``events``: one Event, for every verified event of the node;
- ``alerts``: one Alert, at every raise, update and clear of the node's alert policy;
- ``readings``: a JSON list of Reading, what the node measured in the last quarter second;
- ``heartbeats``: one Heartbeat, the node and each of its devices' health;
- ``deadletters``: one DeadLetter, a message the node could not read or send, with the reason;
- ``status``: one NodeStatus, retained when the node connects, and its last will;
- ``snapshot``: one Snapshot, a camera's picture (or why none) in answer to a snapshot command.

``encode`` is the only way a node makes an uplink payload and ``decode`` the only way ingest reads one, so
the two cannot disagree about a channel's type.

Confirmations go the other way. A node publishes each spooled message with the MQTT v5 properties
``CorrelationData`` (its spool entry) and ``ResponseTopic`` (``confirm_topic``:
``patrolnet/v1/<site>/commands/confirm/<node_id>``, under the commands a node may read). After the transaction
holding the message has committed (as rows or as a dead letter), ingest publishes a ``Confirmation`` with the
correlation data of what it stored there, and the node deletes those entries from its spool: a PUBACK only says
the broker has the message, which a killed broker may forget.

    >>> confirm_topic("willow-court", "node-7")
    'patrolnet/v1/willow-court/commands/confirm/node-7'
    >>> parse_confirm_topic("patrolnet/v1/willow-court/commands/confirm/node-7")
    ('willow-court', 'node-7')
    >>> Confirmation.model_validate_json(Confirmation(ids=["a1/17"]).model_dump_json()).ids
    ['a1/17']

Commands a node answers come the same way: a ``SnapshotCommand`` on ``snapshot_topic`` asks for a camera's
picture now, and the node answers on its ``snapshot`` uplink channel, through its spool like any message.

    >>> snapshot_topic("willow-court", "node-7")
    'patrolnet/v1/willow-court/commands/snapshot/node-7'

Example:
    >>> from alerts.core.models import Place, Reading
    >>> uplink_topic("willow-court", "readings")
    'patrolnet/v1/willow-court/readings'
    >>> parse_uplink_topic("patrolnet/v1/willow-court/alerts")
    ('willow-court', 'alerts')
    >>> place = Place(sub_district="n", community="c", grid="g", site="willow-court", device="smoke-1")
    >>> payload = encode("readings", [Reading(place=place, quantity="smoke", value=1.0)])
    >>> [(r.quantity, r.value) for r in decode("readings", payload)]
    [('smoke', 1.0)]
    >>> encode("alerts", Reading(place=place, quantity="smoke", value=1.0))
    Traceback (most recent call last):
    ...
    TypeError: channel alerts carries one Alert, not Reading
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter

from alerts.core.models import Alert, DeadLetter, Event, Heartbeat, NodeStatus, Reading, Snapshot

log = logging.getLogger(__name__)

TOPIC_PREFIX = "patrolnet/v1"
UPLINK_FILTER = f"{TOPIC_PREFIX}/+/+"
"""Every uplink topic of every site: what central ingest subscribes to."""

COMMANDS = "commands"
CONFIRM = "confirm"
SNAPSHOT = "snapshot"
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
"""A site or node id as it may stand in a topic: what the broker's roles, the registry and ingest all accept."""
_NAME = re.compile(NAME_PATTERN)
MAX_CORRELATION_BYTES = 64
"""The longest correlation data ingest echoes back; a node's spool entries need a few dozen bytes."""

Payload = Event | Alert | Reading | Heartbeat | DeadLetter | NodeStatus | Snapshot


@dataclass(frozen=True)
class Channel:
    """What one uplink channel carries: one ``model`` per message, or a JSON list of them when ``batched``."""

    model: type[BaseModel]
    batched: bool = False
    many: TypeAdapter[list[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "many", TypeAdapter(list[self.model]))  # type: ignore[name-defined]


PAYLOADS: dict[str, Channel] = {
    "events": Channel(Event),
    "alerts": Channel(Alert),
    "readings": Channel(Reading, batched=True),
    "deadletters": Channel(DeadLetter),
    "heartbeats": Channel(Heartbeat),
    "status": Channel(NodeStatus),
    "snapshot": Channel(Snapshot),
}
"""Each uplink channel and its payload type."""
CHANNELS = tuple(PAYLOADS)


def uplink_topic(site: str, channel: str) -> str:
    """The topic a node of ``site`` sends ``channel`` on; ValueError for a channel not in ``PAYLOADS``."""
    _channel(channel)
    return f"{TOPIC_PREFIX}/{site}/{channel}"


def parse_uplink_topic(topic: str) -> tuple[str, str]:
    """(site, channel) of an uplink topic; ValueError if it is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_PREFIX or parts[3] not in PAYLOADS:
        raise ValueError(f"not a {TOPIC_PREFIX} topic: {topic!r}")
    return parts[2], parts[3]


def _channel(name: str) -> Channel:
    if name not in PAYLOADS:
        raise ValueError(f"unknown channel {name!r}")
    return PAYLOADS[name]


def encode(channel: str, payload: BaseModel | Sequence[BaseModel]) -> bytes:
    """The bytes of one message on ``channel``: one model, or a list of them on a batched channel; TypeError
    when the payload is not what the channel carries (a node must never spool what ingest cannot read)."""
    spec = _channel(channel)
    if spec.batched:
        if isinstance(payload, BaseModel) or not all(isinstance(item, spec.model) for item in payload):
            raise TypeError(f"channel {channel} carries a list of {spec.model.__name__}")
        return spec.many.dump_json(list(payload))
    if not isinstance(payload, spec.model):
        raise TypeError(f"channel {channel} carries one {spec.model.__name__}, not {type(payload).__name__}")
    return payload.model_dump_json().encode()


def decode(channel: str, payload: bytes) -> list[Payload]:
    """The models one message on ``channel`` holds; ValueError (pydantic's ValidationError among them) when the
    payload is not what the channel carries, or the channel is unknown."""
    spec = _channel(channel)
    if spec.batched:
        return spec.many.validate_json(payload)
    return [spec.model.model_validate_json(payload)]  # type: ignore[list-item]


class Confirmation(BaseModel):
    """What ingest publishes on a node's ``confirm_topic`` after a commit: the correlation data of each of the
    node's messages that transaction stored, as text."""

    ids: list[str] = Field(title="Stored", description="The correlation data of each message stored.")


def commands_filter(site: str) -> str:
    """Every command topic of ``site``: what its nodes may read."""
    return f"{TOPIC_PREFIX}/{site}/{COMMANDS}/#"


def _command_topic(command: str, site: str, node_id: str) -> str:
    for kind, name in (("site", site), ("node", node_id)):
        if not _NAME.fullmatch(name):
            raise ValueError(f"{kind} {name!r} must be letters, digits, '.', '_' or '-'")
    return f"{TOPIC_PREFIX}/{site}/{COMMANDS}/{command}/{node_id}"


def confirm_topic(site: str, node_id: str) -> str:
    """The topic where ``node_id`` of ``site`` hears what ingest stored; ValueError for a name unsafe in a topic."""
    return _command_topic(CONFIRM, site, node_id)


def snapshot_topic(site: str, node_id: str) -> str:
    """The topic where ``node_id`` of ``site`` hears snapshot commands; ValueError for a name unsafe in a topic."""
    return _command_topic(SNAPSHOT, site, node_id)


def parse_confirm_topic(topic: str) -> tuple[str, str]:
    """(site, node_id) of a confirmation topic; ValueError if it is not one (wildcards included).

    >>> parse_confirm_topic("patrolnet/v1/+/commands/confirm/n1")
    Traceback (most recent call last):
    ...
    ValueError: not a confirmation topic: 'patrolnet/v1/+/commands/confirm/n1'
    """
    parts = topic.split("/")
    if (
        len(parts) != 6
        or "/".join(parts[:2]) != TOPIC_PREFIX
        or parts[3:5] != [COMMANDS, CONFIRM]
        or not (_NAME.fullmatch(parts[2]) and _NAME.fullmatch(parts[5]))
    ):
        raise ValueError(f"not a confirmation topic: {topic!r}")
    return parts[2], parts[5]
