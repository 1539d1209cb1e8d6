"""Reporters' phone links: the page a reporter opens from a link or its QR code, and the routes and commands that
make and revoke links.

A link is ``<public URL>/report#<token>``. The token rides in the fragment, which a browser never sends: it is in
no access log, proxy log or Referer, and the page (``report.html``, served without a key) reads it and sends it
as ``Authorization: Bearer``, a header that is not logged. Behind it the token speaks as the reporter's key
(``alerts.auth.LOOKUP_SQL``): the page posts reports to ``/api/v1/reports`` and reads ``/api/v1/reports/mine``
like any reporter's app. An admin, or the police, within whose places the reporter is registered, makes a link
(shown once; stored only hashed) and may revoke it; a revoked link stops within the key cache time. The QR code
of an absolute link comes as SVG when ``segno`` is installed (it is in the central extra).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from uuid import UUID

import psycopg
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from alerts.api.http import Actor, ApiSettings, Pool, base_url
from alerts.api.phone_page import phone_page
from alerts.auth import Principal
from alerts.core.models import Role
from alerts.core.settings import setting
from alerts.store import phone_reports
from alerts.store.people import UNSCOPED
from alerts.store.phone_reports import ReporterLink

log = logging.getLogger(__name__)

router = APIRouter(tags=["citizen reports"])
LINKERS = frozenset({Role.ADMIN, Role.POLICE})
"""Who may make and revoke reporters' links (within their places)."""

_HTML, _POLICY = phone_page("report.html")


class NewLink(BaseModel):
    link: ReporterLink = Field(description="The link.")
    token: str = Field(description="The link's token: shown once, stored hashed.")
    url: str = Field(description="What the reporter opens (absolute when PATROLNET_PUBLIC_URL is set).")
    qr_svg: str | None = Field(description="The URL's QR code as SVG, when the URL is absolute and segno installed.")


def link_url(base: str, token: str) -> str:
    """The link a reporter opens: the token in the fragment, which the browser keeps to itself.

    >>> link_url("https://alerts.example", "pl_abc")
    'https://alerts.example/report#pl_abc'
    """
    return f"{base}/report#{token}"


def qr_svg(url: str) -> str | None:
    """The QR code of an absolute URL as inline SVG; None for a relative one or without segno."""
    if not url.startswith(("http://", "https://")):
        return None
    try:  # by name: a centre installed before segno joined the central extra still serves links, without a QR code
        segno = importlib.import_module("segno")
    except ImportError:
        return None
    return segno.make(url, error="m").svg_inline(scale=4)


def _linker(who: Principal) -> None:
    if who.role not in LINKERS:
        raise HTTPException(403, f"role {who.role} may not make or revoke reporters' links")


@router.get("/report", include_in_schema=False)
async def report_page() -> HTMLResponse:
    return HTMLResponse(_HTML, headers={"Content-Security-Policy": _POLICY})


@router.post(
    "/api/v1/reporters/{reporter_id}/links", status_code=201, summary="A phone link for a reporter; its token once"
)
async def create_link(request: Request, pool: Pool, reporter_id: UUID, who: Actor) -> NewLink:
    _linker(who)
    async with pool.connection() as conn, conn.transaction():
        if not await phone_reports.reporter_within(conn, who, reporter_id):
            raise HTTPException(404, f"no reporter {reporter_id} within this caller's places")
        link_id, token = await phone_reports.create_link(conn, reporter_id, who.name)
        [link] = [k for k in await phone_reports.list_links(conn, reporter_id) if k.id == link_id]
    url = link_url(base_url(request), token)
    log.info("%s made phone link %s for reporter %s", who.name, link_id, reporter_id)
    return NewLink(link=link, token=token, url=url, qr_svg=qr_svg(url))


@router.get("/api/v1/reporters/{reporter_id}/links", summary="A reporter's phone links, revoked ones too")
async def list_links(pool: Pool, reporter_id: UUID, who: Actor) -> list[ReporterLink]:
    _linker(who)
    async with pool.connection() as conn:
        if not await phone_reports.reporter_within(conn, who, reporter_id):
            raise HTTPException(404, f"no reporter {reporter_id} within this caller's places")
        return await phone_reports.list_links(conn, reporter_id)


@router.delete("/api/v1/reporter-links/{link_id}", status_code=204, summary="Revoke a reporter's phone link")
async def revoke_link(pool: Pool, link_id: UUID, who: Actor) -> None:
    _linker(who)
    async with pool.connection() as conn:
        if not await phone_reports.revoke_link(conn, who, link_id):
            raise HTTPException(404, f"no link {link_id} of a reporter within this caller's places")
    log.info("%s revoked phone link %s", who.name, link_id)


async def _cli_link(reporter_id: UUID, by: str) -> tuple[UUID, str] | None:
    async with await psycopg.AsyncConnection.connect(setting("PATROLNET_DATABASE_URL"), autocommit=True) as conn:
        if not await phone_reports.reporter_within(conn, UNSCOPED, reporter_id):
            return None
        return await phone_reports.create_link(conn, reporter_id, by)


async def _cli_revoke(link_id: UUID) -> bool:
    async with await psycopg.AsyncConnection.connect(setting("PATROLNET_DATABASE_URL"), autocommit=True) as conn:
        return await phone_reports.revoke_link(conn, UNSCOPED, link_id)


def cmd_link(args: argparse.Namespace) -> int:
    made = asyncio.run(_cli_link(args.reporter_id, args.by))
    if made is None:
        raise SystemExit(f"patrolnet: no reporter {args.reporter_id}")
    link_id, token = made
    url = link_url(ApiSettings.from_env().public_url, token)
    print(f"link {link_id}\n{url}")
    svg = qr_svg(url)
    if args.qr and svg is None:
        raise SystemExit("patrolnet: no QR code: set PATROLNET_PUBLIC_URL (an absolute link) and install segno")
    if args.qr:
        with open(args.qr, "w", encoding="utf-8") as out:
            out.write(svg or "")
        print(f"QR code in {args.qr}")
    return 0


def cmd_unlink(args: argparse.Namespace) -> int:
    if not asyncio.run(_cli_revoke(args.link_id)):
        raise SystemExit(f"patrolnet: no link {args.link_id}")
    print(f"revoked {args.link_id}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``patrolnet reporter link|unlink``."""
    reporter = sub.add_parser("reporter", help="citizen reporters' phone links").add_subparsers(
        dest="reporter_command", required=True
    )
    link = reporter.add_parser("link", help="a phone link for a registered reporter; printed once")
    link.add_argument("reporter_id", type=UUID, help="the reporter's id (GET /api/v1/reporters)")
    link.add_argument("--by", default="patrolnet", help="who makes it, for the record")
    link.add_argument("--qr", metavar="FILE.svg", help="also write the link's QR code here")
    link.set_defaults(func=cmd_link)
    unlink = reporter.add_parser("unlink", help="revoke a phone link by its id")
    unlink.add_argument("link_id", type=UUID)
    unlink.set_defaults(func=cmd_unlink)
