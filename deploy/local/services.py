"""Real services started locally for the tests, benchmarks and demo: PostgreSQL, Mosquitto, an RTSP camera,
the alert API.

Each runs on 127.0.0.1 on a free port in a folder of its own and is stopped
by ``stop()``. They are the Debian programs, not stand-ins. PostgreSQL refuses
to run as root, so as root it runs as the ``postgres`` user; Mosquitto started
as root drops to the ``mosquitto`` user, so its folder is handed to that user.

Example:
    >>> import tempfile
    >>> with start_mosquitto(tempfile.mkdtemp()) as broker:  # doctest: +SKIP
    ...     print(broker.url)
    mqtt://127.0.0.1:...
"""

from __future__ import annotations

import logging
import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


SERVICE_PORTS = range(20_000, 32_768)
"""Below Linux's ephemeral range (32768-60999): a port handed out here stays free for a service restarted on it
later, where one from the ephemeral range may meanwhile become some client's source port."""


def free_port() -> int:
    """A port free now on 127.0.0.1, outside the range the kernel gives clients."""
    for port in random.sample(SERVICE_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {SERVICE_PORTS}")


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Service:
    """A started service: its URL, and how to stop it. Usable as a context manager."""

    name: str
    url: str
    port: int
    folder: Path
    proc: subprocess.Popen | None = None
    stop_cmd: list[str] = field(default_factory=list)
    start_cmd: list[str] = field(default_factory=list)
    kill_cmd: list[str] = field(default_factory=list)

    def kill(self) -> None:
        """Stops it at once, as a crash would: SIGKILL, or the kill command (PostgreSQL: immediate shutdown)."""
        if self.kill_cmd:
            subprocess.run(self.kill_cmd, capture_output=True, timeout=60, check=False)
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        log.info("killed %s on port %d", self.name, self.port)

    def start(self) -> None:
        """Starts it again on the same port and folder, after ``stop()`` or ``kill()``."""
        if self.proc is not None:
            self.proc = subprocess.Popen(self.start_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            subprocess.run(self.start_cmd, check=True, capture_output=True, timeout=120)
        wait_for_port(self.port, 30, self.proc)
        log.info("started %s on port %d again", self.name, self.port)

    def stop(self) -> None:
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, capture_output=True, timeout=60, check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log.info("stopped %s on port %d", self.name, self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _as_user(user: str) -> list[str]:
    """A command prefix that runs as ``user`` when we are root, and as ourselves otherwise."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []


def _chown_to(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _pg_tool(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package (make setup)")
    return found


def start_postgres(folder: str | Path, port: int | None = None, database: str = "patrolnet") -> Service:
    """A fresh PostgreSQL cluster in ``folder``; its URL names a database made for us."""
    folder = Path(folder)
    port = port or free_port()
    data = folder / "pgdata"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    _chown_to(folder, "postgres")
    user = _as_user("postgres")
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [*user, _pg_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    log_file = str(folder / "postgres.log")
    start = [*user, _pg_tool("pg_ctl"), "-D", str(data), "-l", log_file, "-o", options, "-w", "start"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    url = f"postgresql://postgres@127.0.0.1:{port}/{database}"
    exists = subprocess.run(
        [_pg_tool("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-tAc",
         f"SELECT 1 FROM pg_database WHERE datname = '{database}'"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not exists:
        subprocess.run(
            [_pg_tool("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database], check=True
        )
    log.info("PostgreSQL on %s", url)
    pg_ctl = [*user, _pg_tool("pg_ctl"), "-D", str(data)]
    return Service(
        "postgresql",
        url,
        port,
        folder,
        stop_cmd=[*pg_ctl, "-m", "fast", "-w", "stop"],
        start_cmd=start,
        kill_cmd=[*pg_ctl, "-m", "immediate", "-w", "stop"],
    )


MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {folder}/
{autosave}
# zigbee2mqtt publishes at QoS 0: queue those too for a persistent session whose client is away.
queue_qos0_messages true
max_queued_messages 100000
max_inflight_messages 1000
# As in deploy/'s configs: no broker-side Nagle delay behind an unacknowledged packet.
set_tcp_nodelay true
log_dest file {folder}/mosquitto.log
log_type error
log_type warning
log_type notice
"""


EVERY_SECOND = """\
# Written every second, not only at shutdown: a SIGKILLed broker keeps its sessions and queued messages,
# less those of its last second.
autosave_interval 1"""
EVERY_CHANGE = """\
# Written at every queued message and subscription change: a SIGKILLed broker loses nothing it acknowledged.
autosave_on_changes true
autosave_interval 1"""


def start_mosquitto(folder: str | Path, port: int | None = None, save_every_change: bool = False) -> Service:
    """A Mosquitto 2 broker with persistence on, anonymous on loopback only; its database is saved every second,
    or at every change (``save_every_change``: slower, but a SIGKILL loses nothing it acknowledged)."""
    folder = Path(folder)
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "mosquitto.conf"
    autosave = EVERY_CHANGE if save_every_change else EVERY_SECOND
    conf.write_text(MOSQUITTO_CONF.format(port=port, folder=folder, autosave=autosave))
    _chown_to(folder, "mosquitto")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    command = [binary, "-c", str(conf)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 15, proc)
    url = f"mqtt://127.0.0.1:{port}"
    log.info("Mosquitto on %s", url)
    return Service("mosquitto", url, port, folder, proc=proc, start_cmd=command)


_DEPLOYED_PATHS = re.compile(r"(?<=\s)/(?:etc|var/lib)/mosquitto/(?:\S+/)?(\S*)")


def start_mosquitto_config(conf_path: str | Path, folder: str | Path, ports: dict[int, int] | None = None) -> Service:
    """Mosquitto started from one of deploy/'s configs, moved onto loopback and into ``folder``.

    Each ``listener PORT`` moves to ``ports[PORT]`` (a free port when not given; ``ports`` is filled in)
    on 127.0.0.1; files under /etc/mosquitto/ and /var/lib/mosquitto/ are looked for in ``folder`` by
    their names (put the password, ACL, certificate and plugin files there first); the log goes to
    ``folder``/mosquitto.log. The URL is the first listener's.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ports = {} if ports is None else ports
    lines, listening = [], []
    for line in Path(conf_path).read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            listening.append(ports.setdefault(int(words[1]), free_port()))
            line = f"listener {listening[-1]} 127.0.0.1"
        elif words[:1] == ["bind_interface"]:
            continue
        elif words[:1] == ["log_dest"]:
            line = f"log_dest file {folder}/mosquitto.log"
        lines.append(_DEPLOYED_PATHS.sub(lambda m: f"{folder}/{m.group(1)}", line))
    conf = folder / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    _chown_to(folder, "mosquitto")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for port in listening:
            wait_for_port(port, 15, proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        log_file = folder / "mosquitto.log"
        raise RuntimeError(f"{exc}: {log_file.read_text() if log_file.exists() else 'no log'}") from exc
    url = f"mqtt://127.0.0.1:{listening[0]}"
    log.info("Mosquitto from %s on %s", conf_path, ports)
    return Service("mosquitto", url, listening[0], folder, proc=proc)


def start_rtsp(h264_file: str | Path, folder: str | Path, port: int | None = None, path: str = "/cam") -> Service:
    """An RTSP camera looping an H.264 file (no B-frames), served by GStreamer under Debian's Python."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_file = (folder / f"rtsp-{port}.log").open("ab")
    cmd = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--file", str(h264_file), "--port", str(port), "--path", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
    ready = proc.stdout.readline() if proc.stdout else ""
    if not ready.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"RTSP server did not start: {ready!r}; see {log_file.name}")
    url = ready.split()[1]
    log.info("RTSP camera on %s", url)
    return Service("rtsp", url, port, folder, proc=proc)


def spawn(args: list[str], env: dict[str, str], stack: ExitStack) -> subprocess.Popen:
    """``patrolnet <args>`` as a child process, terminated and waited for when ``stack`` closes."""
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], env=env)
    stack.callback(proc.wait, 30)
    stack.callback(proc.terminate)
    return proc


class ApiThread:
    """The alert API (``app``, else the one ``create_app`` makes) served by uvicorn on a free port, in a thread of
    this process; a context manager."""

    def __init__(self, database_url: str, app: FastAPI | None = None) -> None:
        import uvicorn

        from alerts.api.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        app = app or create_app(database_url)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        wait_for_port(self.port, 30)
        while not self._server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
