"""deploy/ as shipped: the systemd units pass ``systemd-analyze verify``, the compose file holds together and
runs only commands ``patrolnet`` knows, and Mosquitto starts with each of the configs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from broker_helpers import NOT_AUTHORIZED, PASSWORDS, Probe, SecureBroker
from conftest import REPO
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.intake.broker_auth import write_initial_config
from deploy.cli import TRACKERS, parser
from deploy.local.services import start_mosquitto_config

DEPLOY = REPO / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
TIMERS = sorted((DEPLOY / "systemd").glob("*.timer"))
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "CapabilityBoundingSet=", "User=patrolnet")  # fmt: skip
PATROLNET = "/opt/patrolnet/.venv/bin/patrolnet"


@pytest.mark.services
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify resolves ExecStart= and the units' dependencies: a root with the system's own units, the units
    # under test, and the venv's console script where the units expect it (a stub: verify only checks it runs).
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS + TIMERS:
        shutil.copy(unit, tmp_path / "etc/systemd/system")
    stub = tmp_path / PATROLNET.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    names = [u.name.replace("@.", "@1.") for u in UNITS + TIMERS]
    assert names == ["patrolnet-api.service", "patrolnet-edge.service", "patrolnet-ingest@1.service",
                     "patrolnet-shops-remind.service", "patrolnet-webhooks.service",
                     "patrolnet-shops-remind.timer"]  # fmt: skip
    verify = ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", *names]
    done = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    stub.unlink()
    missing = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and f"Command {PATROLNET} is not executable" in missing.stderr
    for unit in UNITS:
        text = unit.read_text()
        assert all(line in text.splitlines() for line in HARDENING), unit.name
        # A service runs for good and restarts; a oneshot (started by its timer) runs again at the next time.
        oneshot = "Type=oneshot" in text.splitlines()
        assert oneshot == (unit.with_suffix(".timer") in TIMERS), unit.name
        assert oneshot or ("Restart=always" in text and "StartLimitIntervalSec=0" in text), unit.name
        for command in (line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart")):
            args = command.replace("%i", "1").replace("%H", "host").split()
            assert args[0] == PATROLNET
            assert parser().parse_args(args[1:]).func, command


def test_the_compose_file_runs_known_commands_with_declared_secrets_and_healthchecks() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "broker-init", "mosquitto", "ingest-1", "ingest-2", "api", "webhooks"}
    assert services["db"]["image"] == "timescale/timescaledb:latest-pg15"
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    declared = set(compose["secrets"])
    for name, service in services.items():
        assert service.get("image"), name
        used = set(service.get("secrets", []))
        assert used <= declared, name
        for key, value in service.get("environment", {}).items():
            if key.endswith("_FILE"):
                assert value.removeprefix("/run/secrets/") in used, (name, key)
        if name != "broker-init":
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        if service.get("image") == "patrolnet:latest":
            assert (REPO / service["build"]["dockerfile"]).exists()
            command = service["command"]
            assert command[0] == "patrolnet"
            assert parser().parse_args(command[1:]).func, name
    assert {services[f"ingest-{n}"]["command"][-1] for n in (1, 2)} == {"ingest-1", "ingest-2"}
    assert services["ingest-1"]["environment"]["PATROLNET_MQTT_URL_FILE"] == "/run/secrets/ingest_mqtt_url"
    assert "./mosquitto-central.conf:/etc/mosquitto/mosquitto.conf:ro" in services["mosquitto"]["volumes"]
    assert services["mosquitto"]["depends_on"]["broker-init"]["condition"] == "service_completed_successfully"
    assert all(not value.startswith(("mqtt://", "postgresql://")) for value in _strings(compose))


def _stages(dockerfile: str) -> dict[str, str]:
    """The text of each named stage: ``FROM image AS name`` up to the next FROM."""
    parts = re.split(r"^FROM \S+ AS (\w+)$", dockerfile, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_each_image_and_install_line_brings_only_its_roles_packages() -> None:
    stages = _stages((DEPLOY / "Dockerfile").read_text())
    assert list(stages) == ["base", "edge", "central"]  # central last: a build without --target is the centre
    assert "pip install" not in stages["base"]
    assert "[edge]" in stages["edge"] and f"--no-deps '{TRACKERS}'" in stages["edge"]
    assert "[central]" in stages["central"] and "trackers" not in stages["central"]
    assert all("ultralytics" not in stage and "[dev" not in stage for stage in stages.values())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    built = [s["build"] for s in compose["services"].values() if "build" in s]
    assert built and all(b["target"] == "central" for b in built)
    # Every place that installs trackers pins the version deploy.cli tells a missing edge install to get.
    for path in (DEPLOY / "Dockerfile", DEPLOY / "OPERATIONS.md", REPO / "Makefile"):
        assert re.findall(r"--no-deps '(trackers[^']*)'", path.read_text()) == [TRACKERS], path
    operations = (DEPLOY / "OPERATIONS.md").read_text()
    assert "pip install '.[edge]'" in operations and "pip install '.[central]'" in operations
    assert not re.search(r"pip install \.(\s|$)", operations), "a machine installs its role, not everything"


def _strings(tree: object) -> list[str]:
    if isinstance(tree, dict):
        return [s for value in tree.values() for s in _strings(value)]
    if isinstance(tree, list):
        return [s for value in tree for s in _strings(value)]
    return [tree] if isinstance(tree, str) else []


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="patrolnet-conf-"))
    os.chmod(folder, 0o755)
    return folder


@pytest.mark.services
def test_mosquitto_starts_with_the_central_config() -> None:
    folder = _folder()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=t", "-keyout", str(folder / "server.key"),
                    "-out", str(folder / "server.crt")], check=True, capture_output=True, timeout=30)  # fmt: skip
    shutil.copy(folder / "server.crt", folder / "ca.crt")
    write_initial_config(folder / "dynamic-security.json", ("admin", PASSWORDS["admin"]), ("ingest", "x"))
    ports: dict[int, int] = {}
    with start_mosquitto_config(DEPLOY / "mosquitto-central.conf", folder, ports) as service:
        broker = SecureBroker(service, folder, ports)
        assert set(ports) == {1883, 8883}
        with Probe(ports[1883], "admin") as admin:
            assert not admin.connack.is_failure
            assert admin.subscribe("$SYS/broker/uptime") == 1
        with Probe(ports[1883], None) as stranger:
            assert stranger.connack.value == NOT_AUTHORIZED
    assert broker.url("admin").endswith(f"@127.0.0.1:{ports[1883]}")
    config = (folder / "mosquitto.conf").read_text()
    assert f"persistence_location {folder}/" in config and "autosave_interval 30" in config


def _persistent(port: int, client_id: str, topic: str, got: list[bytes]) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client


@pytest.mark.services
def test_mosquitto_starts_with_the_compound_config_and_queues_qos0_for_the_node() -> None:
    folder = _folder()
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "compound.passwd"), "tasmota-b5-smoke", "pw"],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    shutil.copy(DEPLOY / "compound.acl.example", folder / "compound.acl")
    ports: dict[int, int] = {}
    with start_mosquitto_config(DEPLOY / "mosquitto-compound.conf", folder, ports):
        loopback, lan = ports[1883], ports[1884]
        got: list[bytes] = []
        node_id = f"patrolnet-edge-{uuid.uuid4().hex[:6]}"
        node = _persistent(loopback, node_id, "zigbee2mqtt/#", got)
        time.sleep(0.5)
        node.disconnect()
        node.loop_stop()
        with Probe(loopback, None) as zigbee2mqtt:  # anonymous on loopback
            assert not zigbee2mqtt.connack.is_failure
            zigbee2mqtt.client.publish("zigbee2mqtt/b5-smoke", b'{"smoke": true}', qos=0).wait_for_publish(5)
        node = _persistent(loopback, node_id, "zigbee2mqtt/#", got)
        try:
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
            assert got == [b'{"smoke": true}'], "the QoS 0 state sent while the node was away was not kept for it"
        finally:
            node.disconnect()
            node.loop_stop()
        with Probe(lan, None) as stranger:
            assert stranger.connack.is_failure
        with Probe(lan, "tasmota-b5-smoke", "pw") as sensor:
            assert not sensor.connack.is_failure
            assert sensor.publish("tele/tasmota-b5-smoke/SENSOR", b"{}") in (0, 16)
            assert sensor.publish("patrolnet/v1/willow-court/alerts", b"{}") == NOT_AUTHORIZED


@pytest.mark.parametrize("conf", sorted(DEPLOY.glob("*.conf")), ids=lambda p: p.name)
def test_every_mosquitto_config_in_deploy_is_tested(conf: Path) -> None:
    assert conf.name in {"mosquitto-central.conf", "mosquitto-compound.conf"}
