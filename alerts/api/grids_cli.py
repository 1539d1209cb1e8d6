"""``patrolnet grid``: import grids and their people from CSV files and XLSX workbooks, and list the grids, from a
shell on the centre. ``alerts.cli`` adds these commands; the import is ``alerts.store.grid_import``, as
``POST /api/v1/grids/import`` runs it (the columns are in its docstring and the README).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from alerts.api.people_cli import run_on_database
from alerts.store import grid_import, grids
from alerts.store.people import UNSCOPED

log = logging.getLogger(__name__)


def cmd_import(args: argparse.Namespace) -> int:
    files = [(Path(name).name, Path(name).read_bytes()) for name in args.files]
    try:
        result = run_on_database(lambda conn: grid_import.import_files(conn, UNSCOPED, files))
    except grid_import.ImportRefused as exc:
        print(f"patrolnet grid import: {len(exc.errors)} problem(s), nothing imported:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    print(
        f"grids: {result.grids_added} added, {result.grids_changed} changed; "
        f"people: {result.people_added} added, {result.people_changed} changed"
    )
    if result.need_password:
        print(f"no password yet (patrolnet person passwd LOGIN): {', '.join(result.need_password)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for g in run_on_database(lambda conn: grids.list_grids(conn, UNSCOPED)):
        place = f"{g.sub_district}/{g.community}/{g.grid}"
        print(f"{place:<40} {g.name:<30} team: {g.members:<3} leader: {g.leader or '-'}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``grid import|list`` under the central command's subcommands."""
    grid = sub.add_parser("grid", help="grid cells and their teams").add_subparsers(dest="grid_command", required=True)
    load = grid.add_parser(
        "import", help="grids and people from CSV files or XLSX workbooks: all, or nothing with each bad line"
    )
    load.add_argument("files", nargs="+", metavar="FILE", help="a .csv or .xlsx file; a login column: people")
    load.set_defaults(func=cmd_import)
    grid.add_parser("list", help="every grid, with its team's size and leader").set_defaults(func=cmd_list)
