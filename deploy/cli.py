"""The ``patrolnet`` command: one entry point, with the commands of each role that is installed.

    patrolnet edge run --config node.yaml    run an edge node
    patrolnet config check node.yaml         validate a node config
    patrolnet ingest                         central ingest worker (run several)
    patrolnet api                            the alert API and its page
    patrolnet webhooks                       deliver webhooks (run several)
    patrolnet db migrate                     apply the store's migrations (and the TimescaleDB plan)
    patrolnet db prune                       plain PostgreSQL: delete rows past their retention
    patrolnet apikey create --role fire ...  make an API key
    patrolnet apikey list | revoke ID        see the keys (never the keys themselves); revoke one
    patrolnet site add S --sub-district ... --community ... --grid ...   register a site's place (also list,
                                             remove)
    patrolnet broker add-node --site S --node N   broker credentials of an edge node, registered to its site
                                             (also init, add-ingest, rotate, remove, list)
    patrolnet demo                           everything, locally, on real services

An edge-only install (``pip install patrolnet[edge]``) has the edge commands, a central one
(``patrolnet[central]``) the centre's; each side's commands are left out where its packages are missing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

log = logging.getLogger(__name__)

ROLES = {"edge.cli": "edge", "alerts.cli": "central"}
"""The module that adds each role's commands, and the extra that installs what they need."""


def cmd_demo(args: argparse.Namespace) -> int:
    from deploy.local.demo import run_demo

    return run_demo(config=args.config, api_port=args.port)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="patrolnet", description=__doc__.split("\n\n")[0])
    top.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = top.add_subparsers(dest="command", required=True)
    missing = []
    for module, extra in ROLES.items():
        try:
            importlib.import_module(module).add_commands(sub)
        except ModuleNotFoundError as exc:
            missing.append(f"{extra} (needs {exc.name}: pip install 'patrolnet[{extra}]')")
    if missing:
        top.epilog = "not installed: " + "; ".join(missing)
        return top
    # The demo runs both roles on one machine.
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
