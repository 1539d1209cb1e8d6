"""Real services for the tests: PostgreSQL, Mosquitto, a GStreamer RTSP camera, the alert API.

PostgreSQL runs once per session and each test gets a fresh database; a broker
is started per test, because MQTT sessions and shared subscriptions outlive a
client and would leak from one test into the next.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml

from alerts.auth import Principal, create_key
from alerts.core.models import Place
from alerts.core.mqtt import connect, make_client
from alerts.intake.writer import IngestWorker
from alerts.store.database import migrate
from alerts.store.sites import register
from deploy.local.services import ApiThread, Service, start_mosquitto, start_postgres, start_rtsp
from edge.config import NodeConfig
from edge.node import EdgeNode

REPO = Path(__file__).resolve().parent.parent
SERVICE_FIXTURES = frozenset({"postgres", "database_url", "broker", "secure_broker", "rtsp_camera", "sensors", "api"})
"""Fixtures that start a real service: a test using one, directly or through another fixture, is marked
``services``; ``make unit`` runs ``pytest -m "not services and not slow"``."""
SLOW_FIXTURES = frozenset({"yolo11n", "clip", "tracked", "blurred_clip"})
"""Fixtures that take long (a model built and exported with torch, the whole clip through the detector, a node
on a clip of its own): a test using one is marked ``slow``."""
FOOTAGE = REPO / ".cache" / "footage" / "vtest.h264"
YOLO_INPUT_SIZE = 320


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "services: starts PostgreSQL, Mosquitto, an RTSP server or other programs")
    config.addinivalue_line("markers", "slow: needs no service but takes long (whole clips, processes killed)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if SERVICE_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.services)
        if SLOW_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.slow)


def _service_folder(prefix: str) -> Path:
    # Not under pytest's tmp_path: that is private to root, and the services run as their own users.
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(folder, 0o755)
    return folder


@pytest.fixture(scope="session")
def postgres() -> Iterator[Service]:
    with start_postgres(_service_folder("patrolnet-pg-")) as service:
        yield service


EAST_GATE = {"sub_district": "riverside", "community": "east-gate", "grid": "g07"}
REGISTERED: dict[Place, tuple[str, ...]] = {
    Place(**EAST_GATE, site="willow-court"): ("test-node", "fault-node", "node-1", "n1", "node-a", "probe",
                                              "will-node"),
    Place(sub_district="riverside", community="north-bank", grid="g02", site="oak-yard"): ("node-b",),
    Place(**EAST_GATE, site="poison-court"): ("poison-node",),
}  # fmt: skip
"""The sites the tests' nodes and uplink messages speak for, and the node ids registered to each: what an
operator registers with ``patrolnet site add`` and ``patrolnet broker add-node`` before a node reports."""


@pytest.fixture
def database_url(postgres: Service) -> str:
    """A new, migrated database for this test, with the tests' sites and nodes registered (``REGISTERED``)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres.url.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    for place, nodes in REGISTERED.items():
        register(url, place, *nodes)
    return url


@pytest.fixture
def broker() -> Iterator[Service]:
    with start_mosquitto(_service_folder("patrolnet-mqtt-")) as service:
        yield service


@pytest.fixture(scope="session")
def footage() -> Path:
    """vtest.avi as H.264 without B-frames, made by `make setup`."""
    if not FOOTAGE.exists():
        pytest.fail(f"{FOOTAGE} is missing: run `make setup` (the test command does)")
    return FOOTAGE


@pytest.fixture(scope="session")
def yolo11n(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """YOLO11n built offline from its .yaml, untrained, as .pt, .onnx (static, 320) and .yaml, with its names.

    An untrained model proves plumbing, not accuracy: its boxes score around 1e-4. ultralytics swallows the
    OSError of its own online probes, so the guard records every connection or look-up tried and the fixture
    fails if there was any: making the models must stay offline.
    """
    from detectors.ultralytics_backend import import_yolo

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network refused by test")

    folder = tmp_path_factory.mktemp("ultralytics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        # Its settings.json goes here instead of ~/.config, should this be the first import in the process.
        mp.setenv("YOLO_CONFIG_DIR", str(folder / "config"))
        yolo = import_yolo()
        import torch
        import ultralytics

        cfg = Path(ultralytics.__file__).parent / "cfg"
        coco = yaml.safe_load((cfg / "datasets/coco.yaml").read_text())["names"]
        model = yolo("yolo11n.yaml")
        # Names come from the training data; an untrained model has "0".."79" until given COCO's, as training would.
        assert isinstance(model.model, torch.nn.Module)
        model.model.names = coco
        pt = folder / "yolo11n-untrained.pt"
        model.save(pt)
        onnx = Path(yolo(str(pt)).export(format="onnx", imgsz=YOLO_INPUT_SIZE))
        # The scale letter in the file name picks the n(ano) width and depth from the family's .yaml.
        untrained = folder / "yolo11n.yaml"
        shutil.copy(cfg / "models/11/yolo11.yaml", untrained)
    assert attempts == [], "making the models tried the network"
    coco_names = [coco[i] for i in range(80)]
    return {"pt": (pt, coco_names), "onnx": (onnx, coco_names), "yaml": (untrained, [str(i) for i in range(80)])}


@pytest.fixture
def rtsp_camera(footage: Path) -> Iterator[Service]:
    with start_rtsp(footage, _service_folder("patrolnet-rtsp-")) as service:
        yield service


class ApiServer(ApiThread):
    """The alert API in a thread of the test process, and keys to call it with."""

    def key(self, role: str, **scope: str) -> dict[str, str]:
        """Authorization headers of a new key for ``role``, limited to ``scope``."""
        principal = Principal.model_validate({"name": f"test {role}", "role": role, **scope})
        key = create_key(self.database_url, principal)
        return {"Authorization": f"Bearer {key}"}


@contextmanager
def mqtt_client(
    broker: Service, client_id: str, topic: str | None = None, on_message: Callable | None = None
) -> Iterator[mqtt.Client]:
    """A connected MQTT v5 client on the test broker, subscribed to ``topic`` (QoS 1) when one is given."""
    client, address, props = make_client(broker.url, client_id)
    subscribed = threading.Event()
    if topic is not None:
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
    else:
        subscribed.set()
    connect(client, address, props)
    try:
        eventually(client.is_connected)
        assert subscribed.wait(10), f"no SUBACK for {topic}"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def sensors(broker: Service) -> Iterator[mqtt.Client]:
    """A client standing in for zigbee2mqtt, Tasmota devices and native devices on the node's local broker."""
    with mqtt_client(broker, "test-sensors") as client:
        yield client


@contextmanager
def edge_and_ingest(config: NodeConfig, broker: Service, database_url: str) -> Iterator[EdgeNode]:
    """An edge node on ``config`` and an ingest worker, both running on the test broker."""
    worker = IngestWorker(broker.url, database_url, name="test-ingest")
    worker.start()
    assert worker.wait_ready()
    node = EdgeNode(config)
    node.start()
    assert node.wait_ready()
    try:
        yield node
    finally:
        node.stop()
        worker.stop()


@pytest.fixture
def api(database_url: str) -> Iterator[ApiServer]:
    with ApiServer(database_url) as server:
        yield server


def sse_messages(lines: Iterable[str]) -> Iterator[tuple[str, str, dict]]:
    """(id, event, data as JSON) of each Server-Sent Events message in a stream's lines; comments skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


class SseReader:
    """Reads a Server-Sent Events stream in a thread; ``next()`` returns (id, event, data) in order."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self._events: queue.Queue[tuple[str, str, dict]] = queue.Queue()
        self._open = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self.status: int | None = None

    def __enter__(self) -> SseReader:
        self._thread.start()
        assert self._open.wait(10), "the stream did not open"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                self._open.set()
                for message in sse_messages(response.iter_lines()):
                    self._events.put(message)
        except httpx.HTTPError:
            self._open.set()

    def next(self, timeout: float = 10.0) -> tuple[str, str, dict]:
        return self._events.get(timeout=timeout)

    def drain(self, wait: float = 1.0) -> list[tuple[str, str, dict]]:
        """Everything that arrives within ``wait`` seconds."""
        got = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self._events.get(timeout=left))
            except queue.Empty:
                break
        return got


def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Calls ``check`` until it returns something truthy; fails with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"still {value!r} after {timeout} s"
            return value
        time.sleep(interval)
