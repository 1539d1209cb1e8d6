"""The ``patrolnet`` command: one entry point, with the commands of each role that is installed.

    patrolnet edge run --config node.yaml    run an edge node
    patrolnet config check node.yaml         validate a node config
    patrolnet model int8 --footage VIDEO     the detector's int8 graph for darknet-ort, calibrated on VIDEO
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

An edge-only install (``pip install patrolnet[edge]``, then ``trackers`` without its dependencies, see
deploy/OPERATIONS.md) has the edge commands, a central one (``patrolnet[central]``) the centre's; each side's
commands are left out where its packages are missing, and ``demo`` needs both.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

log = logging.getLogger(__name__)

TRACKERS = "trackers==2.6.1"
"""ByteTrack's package, installed without its dependencies: it asks for opencv-python (see pyproject.toml)."""
EDGE_INSTALL = f"pip install 'patrolnet[edge]' && pip install --no-deps '{TRACKERS}'"
CENTRAL_INSTALL = "pip install 'patrolnet[central]'"
ROLES = {
    "edge.cli": ("edge", EDGE_INSTALL, ("numpy", "cv2", "av", "yaml", "supervision", "scipy", "trackers")),
    "alerts.cli": ("central", CENTRAL_INSTALL, ("psycopg", "psycopg_pool", "fastapi", "uvicorn", "prometheus_client")),
}
"""The module that adds each role's commands: the role, how to install it, and the modules it installs. Each role's
commands import those only when run, so they are looked for (not imported, which would slow ``--help`` down)
before a role's commands are added."""


def _absent(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that is not installed, or None.

    >>> _absent(("json", "no_such_module_here", "also_absent"))
    'no_such_module_here'
    """
    return next((name for name in modules if importlib.util.find_spec(name) is None), None)


def cmd_demo(args: argparse.Namespace) -> int:
    from deploy.local.demo import run_demo

    return run_demo(config=args.config, api_port=args.port)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="patrolnet", description=__doc__.split("\n\n")[0])
    top.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = top.add_subparsers(dest="command", required=True)
    missing = []
    for module, (role, install, needs) in ROLES.items():
        absent = _absent(needs)
        if absent is None:
            importlib.import_module(module).add_commands(sub)
        else:
            missing.append(f"{role} (needs {absent}: {install})")
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
