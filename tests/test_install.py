"""Each role installs on its own: an edge node gets no FastAPI, psycopg or torch, the centre no OpenCV, numpy or
torch, and each imports its entry points and has its own ``patrolnet`` commands.

One venv per role per test session, installed by pip from a copy of the repository as deploy/OPERATIONS.md
installs a machine (pip's cache makes a second session quick; pip reaches the package registries only).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

from deploy.cli import TRACKERS

# pip reaches out to the package registries, and each venv takes a while to install.
pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]

NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "__pycache__", "*.egg-info", "build", ".*_cache", "tests", "bench"
)


@dataclass(frozen=True)
class Role:
    extra: str
    then: tuple[str, ...]
    """What pip installs after the extra, without dependencies."""
    entry_points: tuple[str, ...]
    cli: str
    """The module that adds the role's ``patrolnet`` commands."""
    absent: frozenset[str]
    """Distributions that must not be installed (by prefix: opencv covers every OpenCV build)."""


ROLES = {
    "edge": Role(
        extra="edge",
        then=(TRACKERS,),
        entry_points=("edge.node", "edge.cli"),
        cli="edge.cli",
        absent=frozenset({"fastapi", "starlette", "uvicorn", "psycopg", "torch", "ultralytics"}),
    ),
    "central": Role(
        extra="central",
        then=(),
        entry_points=("alerts.intake.writer", "alerts.api.app", "alerts.cli"),
        cli="alerts.cli",
        absent=frozenset({"opencv", "numpy", "torch", "supervision", "scipy", "trackers", "ultralytics"}),
    ),
}


def role_commands(module: str) -> set[str]:
    """The commands ``module`` adds, as this (full) environment's parser has them."""
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).add_commands(sub)
    return set(sub.choices)


# The distributions of a venv, and where each entry point was imported from.
PROBE = """
import importlib, json, sys
from importlib.metadata import distributions
modules = {name: importlib.import_module(name).__file__ for name in sys.argv[1:]}
print(json.dumps({"distributions": sorted(d.metadata["Name"].lower() for d in distributions()), "modules": modules}))
"""


@dataclass(frozen=True)
class Venv:
    path: Path
    seconds: float

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``args`` run from the venv's folder (not the repository's), with no PYTHONPATH to find the checkout."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(args, cwd=self.path, env=env, capture_output=True, text=True, timeout=120)


def _pip(venv: Path, *args: str) -> None:
    # The test's own pip installs into the new venv: no pip in it to bootstrap, no .pyc compiled for it.
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile"]
    subprocess.run([*cmd, *args], check=True, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository without its venv, caches, tests and history: pip builds here, not in the checkout."""
    copy = tmp_path_factory.mktemp("install") / "patrolnet"
    shutil.copytree(REPO, copy, ignore=NOT_SOURCE)
    return copy


class Venvs(dict[str, Venv]):
    """A venv per role, made when a test first asks for it."""

    def __init__(self, source: Path, folders: pytest.TempPathFactory) -> None:
        super().__init__()
        self.source, self.folders = source, folders

    def __missing__(self, name: str) -> Venv:
        role = ROLES[name]
        path = self.folders.mktemp(f"venv-{name}")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
        _pip(path, f"{self.source}[{role.extra}]")
        if role.then:
            _pip(path, "--no-deps", *role.then)
        venv = self[name] = Venv(path, time.monotonic() - started)
        print(f"{name} venv installed in {venv.seconds:.0f} s")
        return venv


@pytest.fixture(scope="session")
def venvs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Venvs:
    return Venvs(source, tmp_path_factory)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_a_role_installs_only_its_own_packages_and_imports_its_entry_points(name: str, venvs: Venvs) -> None:
    role, venv = ROLES[name], venvs[name]
    done = venv.run(str(venv.bin / "python"), "-c", PROBE, *role.entry_points)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    installed = found["distributions"]
    assert "patrolnet" in installed
    assert [d for d in installed if d.startswith(tuple(role.absent))] == []
    # From the venv, not the checkout: the install holds every module its role needs.
    assert all(Path(file).is_relative_to(venv.path) for file in found["modules"].values()), found["modules"]


@pytest.mark.parametrize("name", sorted(ROLES))
def test_patrolnet_lists_the_commands_of_the_installed_role_only(name: str, venvs: Venvs) -> None:
    role, venv = ROLES[name], venvs[name]
    done = venv.run(str(venv.bin / "patrolnet"), "--help")
    assert done.returncode == 0, done.stderr
    usage = re.search(r"\{([a-z,-]+)\}", done.stdout)
    assert usage and set(usage.group(1).split(",")) == role_commands(role.cli), done.stdout
    other = next(r for r in ROLES if r != name)
    assert f"not installed: {other} (needs " in " ".join(done.stdout.split())


def test_an_edge_only_install_checks_a_node_config(venvs: Venvs, source: Path) -> None:
    venv = venvs["edge"]
    example = source / "deploy" / "node.example.yaml"
    done = venv.run(str(venv.bin / "patrolnet"), "config", "check", str(example))
    assert (done.returncode, done.stdout.strip()) == (0, f"{example}: ok: node willow-court-01, site willow-court, "
                                                          "4 sensors, 1 cameras")  # fmt: skip


def test_a_central_only_install_makes_an_api_key_in_the_store(venvs: Venvs, database_url: str) -> None:
    venv = venvs["central"]
    env = {**os.environ, "PATROLNET_DATABASE_URL": database_url}
    env.pop("PYTHONPATH", None)
    cmd = [str(venv.bin / "patrolnet"), "apikey", "create", "--role", "fire", "--name", "lean install"]
    made = subprocess.run(cmd, cwd=venv.path, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run(
        [str(venv.bin / "patrolnet"), "apikey", "list"], cwd=venv.path, env=env, capture_output=True, text=True
    )
    assert "lean install" in listed.stdout, listed.stdout + listed.stderr
