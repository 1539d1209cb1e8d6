"""The node config: one YAML file per edge node, validated by pydantic. Start reading the config here.

A mistake is refused with the file, the line and the field, e.g.
``node.yaml:12: sensors.0.adapter: Input should be 'zigbee2mqtt', 'tasmota' or 'native'``.

The tree: each section is a class ending in ``Config``, derived from the one
base ``alerts.core.config.ConfigModel`` (unknown keys refused, read-only, a
title and a description on every field). A section lives next to the code it
configures, since ``ingest`` and ``detectors`` may not import ``edge``::

    NodeConfig                          edge/config.py             node id, and the sections below
      site: SiteConfig                  edge/config.py             the compound or street: place, time zone
      broker: BrokerConfig              edge/config.py             the local broker the sensors publish to
      uplink: UplinkConfig              edge/config.py             where events go; outbox spool; heartbeats
      supervision: SupervisionConfig    edge/config.py             when workers are restarted, when to give up
      clips: ClipsConfig                edge/clips.py              video clips of security alerts, their upload
      verification: VerificationConfig  detectors/verification.py  how fire alarms confirm each other
      sensors[]: SensorConfig           edge/config.py             device id, adapter, topic, linked cameras,
                                                                   and the fields of SensorRuleConfig:
        (SensorRuleConfig)              detectors/sensor_rules.py  heartbeat (silence), low battery
        heat: HeatConfig                detectors/heat.py          fixed temperature and rate of rise
        downsample: DownsampleConfig    ingest/downsample.py       how many readings go upstream
      detector: DetectorConfig          edge/cameras.py            the one detector worker all cameras share
        backend: BackendConfig          detectors/backend.py       which model runs, and on what
        regions: RegionConfig           detectors/regions.py       whole frames or regions around motion
      cameras[]: CameraConfig           edge/cameras.py            one camera, analysed frames per second
        capture: CaptureConfig          ingest/capture.py          stream URL, timeouts, reconnects
        motion: MotionConfig            detectors/motion.py        the motion gate in front of the detector
        filter: DetectionFilterConfig   detectors/backend.py       classes, score and box size kept
        tracker: TrackerConfig          detectors/tracking.py      how detections become tracks
        tamper: TamperConfig            detectors/tamper.py        covered, blinded, defocused, turned away
        fire: VisualFireConfig          detectors/visual_fire.py   classes of a fire/smoke model
        scene: SceneConfig              detectors/rules.py         what the camera watches
          zones[]: ZoneConfig           detectors/zones.py         polygons on the picture
          lines[]: LineConfig           detectors/zones.py         directed counting lines
          schedules{}: ScheduleConfig   detectors/zones.py         when rules are armed
          rules[]: by type              detectors/rules.py         what raises events: IntrusionRuleConfig,
            LoiteringRuleConfig, LineCrossingRuleConfig, IllegalParkingRuleConfig, ZoneOccupiedRuleConfig,
            CrowdRuleConfig

Example:
    >>> from edge.config import load_config
    >>> cfg = load_config("deploy/node.example.yaml")
    >>> cfg.site.id
    'willow-court'
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from alerts.core.config import ConfigModel
from alerts.core.models import Place
from alerts.core.protocol import TOPIC_PREFIX
from detectors.sensor_rules import SensorRuleConfig
from detectors.verification import VerificationConfig
from edge.cameras import CameraConfig, DetectorConfig
from edge.clips import ClipsConfig
from ingest.adapters import ADAPTERS, AdapterName
from ingest.downsample import DownsampleConfig
from ingest.sensors import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Ids end up in MQTT topics, broker usernames and URLs, so no slashes, wildcards or spaces, and at most 64
characters: within ``alerts.core.protocol.NAME_PATTERN``, which the broker's roles and the site registry take."""


class SiteConfig(ConfigModel):
    id: str = Field(pattern=_ID, title="Site id", description="Unique id of the compound or street, used in topics.")
    name: str = Field(default="", title="Site name", description="Name a person reads on the alert page.")
    sub_district: str = Field(title="Sub-district", description="Street office the site belongs to.")
    community: str = Field(title="Community", description="Community the site belongs to.")
    grid: str = Field(title="Grid cell", description="Grid cell the site belongs to.")
    timezone: str = Field(default="UTC", title="Time zone", description="IANA zone for schedules, e.g. Asia/Shanghai.")

    def place(self, device: str | None = None) -> Place:
        return Place(
            sub_district=self.sub_district, community=self.community, grid=self.grid, site=self.id, device=device
        )


class BrokerConfig(ConfigModel):
    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        pattern=r"^mqtts?://",
        title="Broker URL",
        description="mqtt://[user:password@]host:port of the broker; PATROLNET_MQTT_URL overrides it.",
    )
    session_expiry_s: int = Field(
        default=86_400,
        ge=60,
        le=2**32 - 1,
        title="Session expiry",
        description="How long the broker keeps the node's sensor subscription and the messages queued for it "
        "while the node is down, in seconds.",
    )
    max_inflight: int = Field(
        default=20,
        ge=2,
        le=65_535,
        title="Unacknowledged sensor messages",
        description="How many sensor messages the broker hands the node before it waits for their "
        "acknowledgements: the broker's max_inflight_messages (Mosquitto's default is 20; "
        "deploy/mosquitto-compound.conf sets 1000). The node acknowledges at the latest when half are waiting, "
        "so an alarm behind them never waits for a window.",
    )


class UplinkConfig(ConfigModel):
    url: str | None = Field(
        default=None,
        pattern=r"^mqtts?://",
        title="Uplink broker URL",
        description="Broker that central ingest reads; defaults to the local broker (a Mosquitto bridge "
        "forwards patrolnet/# upstream). PATROLNET_UPLINK_URL overrides it.",
    )
    spool: Path = Field(
        default=Path("/var/lib/patrolnet/outbox.sqlite3"),
        title="Outbox spool",
        description="SQLite file that holds messages until the uplink broker acknowledges them.",
    )
    max_inflight: int = Field(
        default=100, ge=1, le=10_000, title="In-flight window", description="Unacknowledged QoS 1 messages."
    )
    heartbeat_s: float = Field(
        default=30.0,
        gt=0,
        title="Heartbeat interval",
        description="How often the node sends its own health and its devices' upstream, in seconds.",
    )


class SupervisionConfig(ConfigModel):
    """How the node watches its own workers."""

    max_restarts: int = Field(
        default=5,
        ge=1,
        title="Restarts before giving up",
        description="A worker restarted this many times within the window makes the node exit non-zero, "
        "for its service manager to start it again.",
    )
    window_s: float = Field(
        default=300.0, gt=0, title="Restart window", description="Seconds over which restarts are counted."
    )
    stuck_after_s: float = Field(
        default=60.0,
        gt=0,
        title="Stuck after",
        description="A worker busy on one message this long is reported stuck; three times as long, the node exits.",
    )


class SensorConfig(SensorRuleConfig):
    """One sensor: where it publishes, where it hangs, and the settings of its rules."""

    id: str = Field(pattern=_ID, title="Device id", description="Id of the sensor at its site.")
    adapter: AdapterName = Field(title="Adapter", description="Payload format the sensor speaks on the local broker.")
    topic: str = Field(
        title="Topic",
        description="The sensor's state topic: zigbee2mqtt/<friendly_name>, tele/<device>/SENSOR for Tasmota, "
        "<base>/<device> (e.g. patrolnet/sensors/<device>) for the native format.",
    )
    name: str = Field(default="", title="Name", description="Where the sensor hangs, as a person says it.")
    cameras: list[Annotated[str, Field(pattern=_ID)]] = Field(
        default_factory=list, title="Linked cameras", description="Ids of the cameras that see where the sensor hangs."
    )
    downsample: DownsampleConfig = Field(
        default_factory=DownsampleConfig,
        title="Downsampling",
        description="How many of its readings go upstream when it chatters; alarms always go.",
    )
    max_payload_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES,
        ge=64,
        le=MAX_PAYLOAD_BYTES,
        title="Payload cap",
        description="A larger message from this sensor is a dead letter, unread.",
    )

    @field_validator("topic")
    @classmethod
    def _one_device_topic(cls, value: str, info: ValidationInfo) -> str:
        if "+" in value or "#" in value:
            raise ValueError("a sensor topic names one device: no MQTT wildcards")
        if value.startswith(f"{TOPIC_PREFIX}/"):
            raise ValueError(f"{TOPIC_PREFIX}/ is the node's own uplink, not a sensor's")
        adapter = info.data.get("adapter")
        if adapter is not None:
            ADAPTERS[adapter].check_topic(value)
        return value

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[str]) -> list[str]:
        if len(set(cameras)) != len(cameras):
            raise ValueError("a camera is linked once")
        return cameras


def _refuse_repeats(what: str, values: list[str]) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(repeated)}")


class NodeConfig(ConfigModel):
    """One edge node: the site it watches and the devices on it."""

    node_id: str = Field(pattern=_ID, title="Node id", description="Unique id of this edge node.")
    site: SiteConfig = Field(title="Site", description="The compound or street this node serves.")
    broker: BrokerConfig = Field(
        default_factory=BrokerConfig, title="Local broker", description="Where the sensors publish."
    )
    uplink: UplinkConfig = Field(
        default_factory=UplinkConfig, title="Uplink", description="Where events go, and the local spool."
    )
    detector: DetectorConfig = Field(
        default_factory=DetectorConfig,
        title="Detector",
        description="The object detector all cameras share; the offline yolov3-tiny unless set.",
    )
    cameras: list[CameraConfig] = Field(
        default_factory=list, title="Cameras", description="Courtyard cameras, their zones and rules."
    )

    sensors: list[SensorConfig] = Field(
        default_factory=list, title="Sensors", description="Fire sensors and other MQTT devices on the site."
    )
    verification: VerificationConfig = Field(
        default_factory=VerificationConfig,
        title="Alarm verification",
        description="How fire alarms of the site's detectors confirm each other.",
    )
    supervision: SupervisionConfig = Field(
        default_factory=SupervisionConfig,
        title="Supervision",
        description="When a failing worker of the node is restarted, and when the node gives up.",
    )
    clips: ClipsConfig | None = Field(
        default=None,
        title="Clips",
        description="Video clips of the cameras' security alerts, kept on the node and uploaded; none if unset.",
    )

    @field_validator("sensors")
    @classmethod
    def _unique_sensors(cls, sensors: list[SensorConfig]) -> list[SensorConfig]:
        _refuse_repeats("sensor ids", [s.id for s in sensors])
        _refuse_repeats("sensor topics", [s.topic for s in sensors])
        return sensors

    @field_validator("sensors")
    @classmethod
    def _linked_cameras_exist(cls, sensors: list[SensorConfig], info: ValidationInfo) -> list[SensorConfig]:
        known = {c.id for c in info.data.get("cameras", [])}
        for sensor in sensors:
            missing = [c for c in sensor.cameras if c not in known]
            if missing:
                raise ValueError(f"sensor {sensor.id} links to cameras not in cameras: {', '.join(missing)}")
        return sensors

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        _refuse_repeats("camera ids", [c.id for c in cameras])
        return cameras

    def broker_url(self) -> str:
        return os.environ.get("PATROLNET_MQTT_URL") or self.broker.url

    def uplink_url(self) -> str:
        return os.environ.get("PATROLNET_UPLINK_URL") or self.uplink.url or self.broker_url()


class ConfigError(ValueError):
    """A config file that cannot be used; the message names file, line and field."""


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walks the YAML node tree along a pydantic error location to the line it came from.

    A mapping entry counts from its key's line, so a missing field points at its parent's key.
    """
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == key), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(text: str, filename: str = "<config>") -> NodeConfig:
    """Parses and validates YAML text; raises ConfigError naming line and field."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:1: the config must be a mapping of settings")
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            msg = re.sub(r"^Value error, ", "", err["msg"])
            problems.append(f"{filename}:{line}: {_field_path(loc)}: {msg}")
        raise ConfigError("\n".join(problems)) from exc


def load_config(path: str | Path) -> NodeConfig:
    """Reads a node config file; raises ConfigError naming line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    config = parse_config(text, str(path))
    log.info("loaded config %s for node %s at site %s", path, config.node_id, config.site.id)
    return config
