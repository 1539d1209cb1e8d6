"""The edge node's commands: run a node, check a node's config."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from alerts.core.settings import wait_for_signal

log = logging.getLogger(__name__)


def _terminate_when_set(failed: threading.Event) -> None:
    failed.wait()
    os.kill(os.getpid(), signal.SIGTERM)


def cmd_edge_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.node import EdgeNode

    node = EdgeNode(load_config(args.config))
    node.start()
    # A node that cannot recover wakes the wait below as a service manager's SIGTERM would.
    threading.Thread(target=_terminate_when_set, args=(node.failed,), daemon=True).start()
    wait_for_signal()
    node.stop()
    log.info("edge node stopped: %s", dict(node.counts))
    if node.failure:
        # Non-zero, so that systemd (Restart=on-failure) starts the node again.
        log.error("edge node gave up: %s", node.failure)
        return 1
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{args.file}: ok: node {config.node_id}, site {config.site.id}, "
        f"{len(config.sensors)} sensors, {len(config.cameras)} cameras"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The edge node's subcommands on the ``patrolnet`` parser."""
    edge = sub.add_parser("edge", help="the edge node").add_subparsers(dest="edge_command", required=True)
    run = edge.add_parser("run", help="run an edge node")
    run.add_argument("--config", required=True, help="node config YAML file")
    run.set_defaults(func=cmd_edge_run)

    config = sub.add_parser("config", help="node configs").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="validate a node config")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)
