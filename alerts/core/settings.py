"""Settings from the environment, or from a file named by ``<NAME>_FILE`` (how secrets reach a process
without a command line or the repository seeing them). Every role reads its settings through here.

Example:
    >>> import os
    >>> os.environ["PATROLNET_EXAMPLE"] = "42"
    >>> setting("PATROLNET_EXAMPLE"), setting("PATROLNET_MISSING", "default")
    ('42', 'default')
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


class MissingSetting(SystemExit):
    """A required setting is in neither the environment nor a file; the message says which."""


def optional_setting(name: str) -> str | None:
    """The value of ``name`` or of the file named by ``<name>_FILE``; None when neither is set."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return None


def setting(name: str, default: str | None = None) -> str:
    """The value of ``name`` (see ``optional_setting``), else ``default``; exits naming both ways to set it."""
    value = optional_setting(name)
    if value is not None:
        return value
    if default is not None:
        return default
    raise MissingSetting(f"patrolnet: set {name} (or {name}_FILE)")


def wait_for_signal() -> None:
    """Blocks until SIGINT or SIGTERM: how every long-running role waits for its service manager."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
