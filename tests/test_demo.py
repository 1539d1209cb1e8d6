"""`make demo`'s main job, as a user runs it: the whole path on real services, then a clean Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from conftest import REPO, eventually

from deploy.local.services import free_port


@pytest.mark.services
def test_the_demo_raises_camera_and_fire_alerts_and_stops_cleanly() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "demo", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    try:
        keys: dict[str, str] = {}
        logins: list[str] = []
        deadline = time.monotonic() + 120
        while len(keys) < 4 and time.monotonic() < deadline and (line := demo.stdout.readline()):
            logins += re.findall(r"^\s+\w+\s+login (demo-\w+)\s+password \S+", line)
            if found := re.match(r"\s+(\w+)\s+key (pn_\S+)$", line):
                keys[found[1]] = found[2]
        assert set(keys) == {"fire", "police", "operator", "admin"}, "the demo prints a key per desk"
        assert logins == ["demo-fire", "demo-police", "demo-operator", "demo-admin"], "and a person to sign in as"
        api = f"http://127.0.0.1:{port}/api/v1"

        def get(path: str, role: str) -> Any:  # decoded JSON
            response = httpx.get(f"{api}{path}", headers={"Authorization": f"Bearer {keys[role]}"}, timeout=10)
            assert response.status_code == 200, response.text
            return response.json()

        # vtest.avi's walkway always has someone loitering on it or crossing the gate line.
        security = eventually(lambda: get("/alerts", "police")["items"], timeout=90)
        assert {a["kind"] for a in security} == {"security"}
        assert {a["place"]["device"] for a in security} == {"cam-courtyard"}
        devices = eventually(lambda: {d["device"]: d for d in get("/devices", "admin")}, timeout=60)
        assert devices["cam-courtyard"]["online"] and devices["cam-courtyard"]["type"] == "camera"
        # The simulated detectors go into alarm within the first minute.
        fire = eventually(lambda: get("/alerts", "fire")["items"], timeout=90)
        assert {a["kind"] for a in fire} == {"fire"} and all(a["route"] == "fire" for a in fire)
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0, "Ctrl-C stops every part and exits cleanly"
