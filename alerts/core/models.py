"""The types that cross every boundary: Place, Reading, Event and Alert.

Each is a pydantic model with a stable JSON form (``model_dump_json`` /
``model_validate_json``), a UUID given where it is born so that every hop can
be retried and every insert is idempotent, and a UTC timestamp.

Example:
    >>> from alerts.core.models import Event, EventKind, Place
    >>> place = Place(sub_district="north", community="c1", grid="g1", site="s1", device="d1")
    >>> event = Event(kind=EventKind.FIRE, type="smoke", place=place, source="node-1")
    >>> Event.model_validate_json(event.model_dump_json()) == event
    True
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from alerts.core.ids import time_id


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Wire(BaseModel):
    """Base for wire types: unknown keys are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Place(_Wire):
    """Where something is: sub-district > community > grid cell > site > device."""

    sub_district: str = Field(title="Sub-district", description="Street office that owns the area.")
    community: str = Field(title="Community", description="Residents' community within the sub-district.")
    grid: str = Field(title="Grid cell", description="Grid cell within the community.")
    site: str = Field(title="Site", description="A compound or a street.")
    device: str | None = Field(default=None, title="Device", description="Camera or sensor id at the site.")

    def with_device(self, device: str) -> Place:
        return self.model_copy(update={"device": device})


class EventKind(StrEnum):
    SECURITY = "security"
    FIRE = "fire"
    TROUBLE = "trouble"
    REPORT = "report"
    ENFORCEMENT = "enforcement"  # stalls, vendors, illegal parking and building: worked as cases, not by police


class Severity(StrEnum):
    INFO = "info"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class EventState(StrEnum):
    """Whether the condition behind an event starts, goes on, or ends; or a moment with no duration."""

    START = "start"
    UPDATE = "update"
    END = "end"
    INSTANT = "instant"


class AlertStatus(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_ALARM = "false_alarm"


class Role(StrEnum):
    POLICE = "police"
    FIRE = "fire"
    OPERATOR = "operator"
    ADMIN = "admin"
    EDGE = "edge"
    REPORTER = "reporter"
    GRID_WORKER = "grid_worker"
    CITY_MANAGEMENT = "city_management"
    TRAFFIC_POLICE = "traffic_police"


ROUTES: dict[EventKind, Role] = {
    EventKind.SECURITY: Role.POLICE,
    EventKind.REPORT: Role.POLICE,
    EventKind.FIRE: Role.FIRE,
    EventKind.TROUBLE: Role.OPERATOR,
    EventKind.ENFORCEMENT: Role.CITY_MANAGEMENT,
}
"""Which desk an alert of each kind goes to."""


class _Stamped(_Wire):
    id: UUID = Field(default_factory=time_id, title="Id", description="Given where the object is born; never reused.")
    ts: AwareDatetime = Field(default_factory=utc_now, title="Time", description="When it happened, in UTC.")

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class Reading(_Stamped):
    """One measured value of one sensor: a number, or 1/0 for a flag such as smoke."""

    place: Place = Field(title="Place", description="Where the sensor is, device included.")
    quantity: str = Field(title="Quantity", description="What was measured, e.g. temperature, smoke, battery.")
    # NaN and infinities measure nothing, and PostgreSQL's jsonb refuses them: a node cannot make such a reading,
    # and ingest refuses one it is sent.
    value: FiniteFloat = Field(
        title="Value", description="The value, a finite number; flags are 1.0 (set) or 0.0 (clear)."
    )
    unit: str = Field(default="", title="Unit", description="Unit of the value, e.g. °C, %, ppm.")

    @classmethod
    def checked(cls, place: Place, quantity: str, value: float, unit: str, ts: datetime) -> Reading:
        """A new reading of values checked already (a validated place, a finite float, a time in UTC), made
        without validating them again: 2.1 us with its id, not 3.3; a node makes five a sensor message
        (``ingest.sensors``).

        >>> place = Place(sub_district="n", community="c", grid="g", site="s", device="d")
        >>> reading = Reading.checked(place, "temperature", 21.5, "°C", utc_now())
        >>> reading == Reading(id=reading.id, ts=reading.ts, place=place, quantity="temperature", value=21.5,
        ...                    unit="°C")
        True
        """
        reading = object.__new__(cls)
        values = {"id": time_id(), "ts": ts, "place": place, "quantity": quantity, "value": value, "unit": unit}
        object.__setattr__(reading, "__dict__", values)
        object.__setattr__(reading, "__pydantic_fields_set__", set(values))
        object.__setattr__(reading, "__pydantic_extra__", None)
        object.__setattr__(reading, "__pydantic_private__", None)
        return reading


class _Verified(_Wire):
    """What a fire sensor's event says, and its alert keeps: the values behind it and alarm verification."""

    readings: dict[str, FiniteFloat] = Field(
        default_factory=dict,
        title="Readings",
        description="The sensor's values behind it (on an alert: those of the newest event that had any).",
    )
    confirmed: bool | None = Field(
        default=None,
        title="Confirmed",
        description="A fire alarm another detector of the site confirms (alarm verification); null: not verified.",
    )
    confirmed_by: list[str] = Field(
        default_factory=list, title="Confirmed by", description="The devices in alarm together, sorted; empty if none."
    )


class Event(_Stamped, _Verified):
    """Something a detector or a sensor rule saw: the one type every role passes on."""

    kind: EventKind = Field(title="Kind", description="security, fire, trouble or report.")
    type: str = Field(title="Type", description="What happened, e.g. smoke, intrusion, camera_offline.")
    state: EventState = Field(default=EventState.START, title="State", description="start, update or end.")
    severity: Severity = Field(default=Severity.MAJOR, title="Severity", description="How urgent it is.")
    place: Place = Field(title="Place", description="Where it happened, device included.")
    source: str = Field(title="Source", description="The node or component that raised it.")
    subject: str = Field(
        default="",
        title="Subject",
        description="What on the device it is about, e.g. the rule and zone; part of the dedup key.",
    )
    condition: str = Field(
        default="",
        title="Condition",
        description="Which of several concurrent conditions under one subject, e.g. a track id: the situation "
        "ends when the last of them ends.",
    )
    title: str = Field(default="", title="Title", description="One line a person reads first.")
    test: bool = Field(
        default=False,
        title="Test",
        description="A detector test (test mode or its test button): stored, never an alert, never dispatched.",
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict, title="Attributes", description="Track id, box, zone, trigger and the like."
    )
    snapshot: bytes | None = Field(
        default=None, title="Snapshot", description="JPEG of what the camera saw, boxes drawn (base64 in JSON)."
    )

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    @property
    def dedup_key(self) -> str:
        """Events with the same key describe one ongoing situation."""
        return "/".join((self.place.site, self.place.device or "", self.kind, self.type, self.subject))


class Alert(_Stamped, _Verified):
    """One ongoing situation for a desk: many events, one alert that updates.

    ``ts`` is when the alert was raised; ``revision`` grows with every update so
    that a store keeps the newest copy whatever order copies arrive in.
    """

    kind: EventKind = Field(title="Kind", description="security, fire, trouble or report.")
    type: str = Field(title="Type", description="What happened, e.g. smoke.")
    severity: Severity = Field(title="Severity", description="How urgent it is.")
    place: Place = Field(title="Place", description="Where it happens.")
    source: str = Field(title="Source", description="The node that raised it.")
    title: str = Field(default="", title="Title", description="One line a person reads first.")
    route: Role = Field(title="Route", description="Which desk handles it.")
    dedup_key: str = Field(title="Dedup key", description="Events with this key update this alert.")
    active: bool = Field(default=True, title="Active", description="False once the condition has cleared.")
    count: int = Field(default=1, ge=1, title="Count", description="How many events it gathered.")
    last_seen: AwareDatetime = Field(default_factory=utc_now, title="Last seen", description="Newest event.")
    cleared_at: AwareDatetime | None = Field(default=None, title="Cleared at", description="When it cleared.")
    revision: int = Field(default=1, ge=1, title="Revision", description="Grows with every update.")
    last_event_id: UUID | None = Field(default=None, title="Last event", description="Newest event's id.")
    attributes: dict[str, Any] = Field(
        default_factory=dict, title="Attributes", description="The newest event's other details."
    )
    notify: list[Role] = Field(
        default_factory=list,
        title="Coverage notice for",
        description="Desks besides the route that get this trouble as a coverage notice, not an alarm: the "
        "device it concerns feeds their alarms. Set by the centre from the trouble's type (alerts.coverage).",
    )
    status: AlertStatus = Field(
        default=AlertStatus.NEW, title="Status", description="Where a desk is with it; owned by the store."
    )
    status_by: str | None = Field(default=None, title="Status by", description="Who set the status.")
    status_at: AwareDatetime | None = Field(default=None, title="Status at", description="When it was set.")


class DeviceStatus(_Wire):
    """How one camera or sensor of a node is doing, as its node last saw it."""

    device: str = Field(title="Device", description="Camera or sensor id at the site.")
    type: str = Field(title="Type", description="camera, or the sensor's adapter, e.g. zigbee2mqtt.")
    online: bool = Field(title="Online", description="Whether it is delivering now.")
    last_seen: AwareDatetime | None = Field(default=None, title="Last seen", description="Its newest message.")
    detail: dict[str, Any] = Field(
        default_factory=dict, title="Detail", description="Battery, fps, reconnects, drops and the like."
    )


class Heartbeat(_Stamped):
    """A node saying it is alive, with the health of its devices; sent every few seconds."""

    node_id: str = Field(title="Node", description="The edge node that sends it.")
    place: Place = Field(title="Place", description="The node's site (no device).")
    started_at: AwareDatetime = Field(title="Started at", description="When the node process started.")
    devices: list[DeviceStatus] = Field(default_factory=list, title="Devices", description="Each device's health.")
    counters: dict[str, float] = Field(
        default_factory=dict, title="Counters", description="Messages, events, drops, spool depth and the like."
    )
    unconfirmed: int | None = Field(
        default=None,
        ge=0,
        title="Unconfirmed",
        description="Messages in the node's spool that ingest has not confirmed; null from a node that does not say.",
    )
    oldest_unconfirmed_s: float | None = Field(
        default=None,
        ge=0,
        title="Oldest unconfirmed",
        description="Age in seconds of the oldest unconfirmed message; null when none waits.",
    )


class NodeStatus(_Stamped):
    """Whether a node's uplink is connected: published retained on ``patrolnet/v1/<site>/status`` when the node
    connects (online) and, as its MQTT last will, by the broker when the node vanishes (offline)."""

    node_id: str = Field(title="Node", description="The edge node it speaks of.")
    place: Place = Field(title="Place", description="The node's site (no device).")
    online: bool = Field(title="Online", description="True when the node connected; false when it went away.")


DEAD_LETTER_KEEPS = 65_536
"""How many bytes of an oversized payload its dead letter keeps."""


class DeadLetter(_Stamped):
    """A message that could not be understood, kept with the reason."""

    topic: str = Field(title="Topic", description="MQTT topic it arrived on.")
    payload: bytes = Field(title="Payload", description="The raw bytes, as received (base64 in JSON).")
    reason: str = Field(title="Reason", description="Why it was refused.")
    source: str = Field(title="Source", description="The node or worker that refused it.")

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")


SNAPSHOT_MAX_BYTES = 1_000_000
"""The largest JPEG a node sends in answer to a snapshot command (base64 makes a third more on the wire)."""


class SnapshotCommand(_Wire):
    """The centre asking a node for its camera's picture now, on ``patrolnet/v1/<site>/commands/snapshot/<node>``.
    A node may get one request more than once (the centre asks again until it is answered): answering each is
    harmless, the centre keeps the first answer."""

    request_id: UUID = Field(title="Request", description="The centre's snapshot request, echoed in the answer.")
    camera: str = Field(min_length=1, max_length=64, title="Camera", description="The camera's device id.")


class Snapshot(_Stamped):
    """A node's answer to a ``SnapshotCommand``, on the ``snapshot`` uplink channel: the camera's newest frame as a
    JPEG taken at ``ts``, or why there is none (an unknown camera, no frame yet)."""

    request_id: UUID = Field(title="Request", description="The request it answers.")
    node_id: str = Field(title="Node", description="The edge node that answers.")
    place: Place = Field(title="Place", description="The node's site, the camera as its device.")
    jpeg: bytes | None = Field(
        default=None, max_length=SNAPSHOT_MAX_BYTES, title="Picture", description="The JPEG (base64 in JSON)."
    )
    error: str = Field(default="", max_length=500, title="Error", description="Why there is no picture; '' if one.")

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    @model_validator(mode="after")
    def _picture_or_error(self) -> Snapshot:
        if (self.jpeg is None) == (not self.error):
            raise ValueError("a snapshot carries either a JPEG or an error, not both or neither")
        if self.jpeg is not None and not self.jpeg.startswith(b"\xff\xd8"):
            raise ValueError("jpeg is not a JPEG")
        return self
