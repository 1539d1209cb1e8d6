"""``patrolnet person``: add, list, disable people, and set their passwords and TOTP secrets, from a shell on the
centre (the first admin comes from here). ``alerts.cli`` adds these commands; the queries are
``alerts.store.people``, as the admin routes use them.

A password is read from ``--password-file`` (the file's first line), or made up and printed once: it never
appears on a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import psycopg

from alerts.auth import PERSON_ROLES
from alerts.core.settings import setting
from alerts.store import people

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_on_database(work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
    """``work`` on a connection to the database of ``PATROLNET_DATABASE_URL``: the commands' way to the store."""

    async def run() -> T:
        async with await psycopg.AsyncConnection.connect(setting("PATROLNET_DATABASE_URL"), autocommit=True) as conn:
            return await work(conn)

    return asyncio.run(run())


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password and whether it was made up here (and must be shown)."""
    if args.password_file:
        lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        return (lines[0] if lines else ""), False
    return secrets.token_urlsafe(12), True


async def _find(conn: psycopg.AsyncConnection, login: str) -> people.Person:
    found = await people.find_person(conn, people.UNSCOPED, login=login)
    if found is None:
        raise SystemExit(f"patrolnet: no person with login {login!r}")
    return found


def cmd_add(args: argparse.Namespace) -> int:
    password, made_up = _password(args)
    scope = {level: getattr(args, level) for level in ("sub_district", "community", "grid", "site")}
    try:
        body = people.PersonIn(
            login=args.login, name=args.name, phone=args.phone, role=args.role, on_duty=args.on_duty,
            totp=args.totp, password=password, **scope,
        )  # fmt: skip
        person, uri = run_on_database(lambda conn: people.add_person(conn, body))
    except ValueError as exc:  # pydantic's ValidationError is one
        raise SystemExit(f"patrolnet: {exc}") from exc
    print(f"added {person.role} {person.login} ({person.name}), id {person.id}")
    if made_up:
        print(f"password (shown once): {password}")
    if uri:
        print(f"TOTP for their authenticator app (shown once): {uri}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for p in run_on_database(lambda conn: people.list_people(conn, people.UNSCOPED)):
        scope = "/".join(v for v in (p.sub_district, p.community, p.grid, p.site) if v) or "everywhere"
        flags = [f for f, on in (("on duty", p.on_duty), ("totp", p.totp), ("DISABLED", p.disabled)) if on]
        print(f"{p.id}  {p.login:<20} {p.role:<16} {scope:<40} {p.name}  {', '.join(flags)}")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    async def disable(conn: psycopg.AsyncConnection) -> people.Person:
        person = await _find(conn, args.login)
        return await people.change_person(conn, person.id, people.PersonChange(disabled=not args.enable))

    person = run_on_database(disable)
    print(f"{person.login}: {'disabled, their sessions ended' if person.disabled else 'enabled'}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    password, made_up = _password(args)
    if len(password) < 12:
        raise SystemExit("patrolnet: a password has at least 12 characters")

    async def passwd(conn: psycopg.AsyncConnection) -> None:
        await people.set_password(conn, (await _find(conn, args.login)).id, password)

    run_on_database(passwd)
    print(
        f"{args.login}: new password set, their sessions ended"
        + (f"; it is (shown once): {password}" if made_up else "")
    )
    return 0


def cmd_totp(args: argparse.Namespace) -> int:
    async def totp(conn: psycopg.AsyncConnection) -> str:
        person = await _find(conn, args.login)
        return await people.reset_totp(conn, person.id, person.login)

    uri = run_on_database(totp)
    print(f"TOTP for {args.login}'s authenticator app (shown once; the old codes stop working): {uri}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``person add|list|disable|passwd|totp`` under the central command's subcommands."""
    person = sub.add_parser("person", help="people who sign in to the page").add_subparsers(
        dest="person_command", required=True
    )
    add = person.add_parser("add", help="add a person; a made-up password and an admin's TOTP URI are printed once")
    add.add_argument("--login", required=True, help="what they sign in with: lower-case letters, digits, ._-")
    add.add_argument("--name", required=True, help="full name, as the audit trail shows it")
    add.add_argument("--role", required=True, choices=[r.value for r in PERSON_ROLES])
    add.add_argument("--phone", default="")
    for level in ("sub-district", "community", "grid", "site"):
        add.add_argument(f"--{level}", help=f"limit them to this {level}")
    add.add_argument("--on-duty", action="store_true", help="on duty now")
    add.add_argument("--totp", action="store_true", help="sign in with a TOTP code too (always for an admin)")
    add.set_defaults(func=cmd_add)
    person.add_parser("list", help="everyone, with role, scope and state").set_defaults(func=cmd_list)
    disable = person.add_parser("disable", help="no more sign-ins; their sessions end at once")
    disable.add_argument("login")
    disable.add_argument("--enable", action="store_true", help="undo: let them sign in again")
    disable.set_defaults(func=cmd_disable)
    passwd = person.add_parser("passwd", help="a new password (made up and printed unless --password-file)")
    passwd.add_argument("login")
    passwd.set_defaults(func=cmd_passwd)
    totp = person.add_parser("totp", help="a new TOTP secret; prints its otpauth:// URI once")
    totp.add_argument("login")
    totp.set_defaults(func=cmd_totp)
    for command in (add, passwd):
        command.add_argument("--password-file", help="read the password from this file's first line")
