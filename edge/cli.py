"""The ``patrolnet`` command: one entry point for every role.

    patrolnet edge run --config node.yaml    run an edge node
    patrolnet ingest                         central ingest worker (run several)
    patrolnet api                            the alert API and its page
    patrolnet db migrate                     apply the store's migrations
    patrolnet apikey create --role fire ...  make an API key
    patrolnet config check node.yaml         validate a node config
    patrolnet demo                           everything, locally, on real services

Connection settings come from the environment: ``PATROLNET_DATABASE_URL`` and
``PATROLNET_MQTT_URL``, or ``<NAME>_FILE`` naming a file that holds the value,
so secrets stay out of command lines and the repo.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def setting(name: str, default: str | None = None) -> str:
    """An environment setting, or the content of the file named by ``<name>_FILE``."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    if default is not None:
        return default
    raise SystemExit(f"patrolnet: set {name} (or {name}_FILE)")


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def cmd_edge_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.node import EdgeNode

    node = EdgeNode(load_config(args.config))
    node.start()
    wait_for_signal()
    node.stop()
    log.info("edge node stopped: %s", dict(node.counts))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from alerts.store import migrate
    from alerts.writer import IngestWorker

    database_url = setting("PATROLNET_DATABASE_URL")
    migrate(database_url)
    worker = IngestWorker(setting("PATROLNET_MQTT_URL"), database_url, name=args.name)
    worker.start()
    wait_for_signal()
    worker.stop()
    log.info("ingest stopped: %s", dict(worker.counts))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from alerts.api import create_app
    from alerts.store import migrate

    database_url = setting("PATROLNET_DATABASE_URL")
    migrate(database_url)
    uvicorn.run(create_app(database_url), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from alerts.store import migrate

    applied = migrate(setting("PATROLNET_DATABASE_URL"))
    print("applied: " + ", ".join(applied) if applied else "the schema is up to date")
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from alerts.auth import Principal, create_key

    principal = Principal(
        name=args.name,
        role=args.role,
        sub_district=args.sub_district,
        community=args.community,
        grid=args.grid,
        site=args.site,
    )
    print(create_key(setting("PATROLNET_DATABASE_URL"), principal))
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


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import run_demo

    return run_demo(config=args.config, api_port=args.port)


def parser() -> argparse.ArgumentParser:
    from alerts.models import Role

    top = argparse.ArgumentParser(prog="patrolnet", description=__doc__.split("\n\n")[0])
    top.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = top.add_subparsers(dest="command", required=True)

    edge = sub.add_parser("edge", help="the edge node").add_subparsers(dest="edge_command", required=True)
    run = edge.add_parser("run", help="run an edge node")
    run.add_argument("--config", required=True, help="node config YAML file")
    run.set_defaults(func=cmd_edge_run)

    ingest = sub.add_parser("ingest", help="central ingest worker: MQTT uplink into the store")
    ingest.add_argument("--name", default=f"ingest-{os.getpid()}", help="worker name (its MQTT session)")
    ingest.set_defaults(func=cmd_ingest)

    api = sub.add_parser("api", help="serve the alert API and its page")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    db = sub.add_parser("db", help="the store").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply the migrations").set_defaults(func=cmd_db_migrate)

    apikey = sub.add_parser("apikey", help="API keys").add_subparsers(dest="apikey_command", required=True)
    create = apikey.add_parser("create", help="make a key; it is printed once")
    create.add_argument("--name", required=True, help="who holds it, e.g. 'district fire desk'")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    for level in ("sub-district", "community", "grid", "site"):
        create.add_argument(f"--{level}", help=f"limit the key to this {level}")
    create.set_defaults(func=cmd_apikey_create)

    config = sub.add_parser("config", help="node configs").add_subparsers(dest="config_command", required=True)
    check = config.add_parser("check", help="validate a node config")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    demo = sub.add_parser("demo", help="run everything locally on real services")
    demo.add_argument("--config", default="deploy/node.example.yaml", help="node config to run")
    demo.add_argument("--port", type=int, default=8000, help="port of the alert API and page")
    demo.set_defaults(func=cmd_demo)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
