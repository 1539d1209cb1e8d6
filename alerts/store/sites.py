"""The site registry: each site's place and name, the node ids that belong to it, and ingest's cached view.

An operator registers a site's place (``patrolnet site add``, or ``POST /api/v1/sites``), then each of its nodes
(``patrolnet broker add-node``, which also makes the node's broker credential). Ingest takes every message's
place from here by the topic's site (``alerts.identity.registry_mismatch``): a payload cannot move an alarm to
another community's desk, and a node id answers only for the site it is registered to.

Registering a node clears what another site wrote under its id before (its ``nodes`` and ``node_status`` rows
and the ``devices`` they reported): that is how an id taken before the registry is given back.

``SiteRegistry`` is one ingest worker's cached copy: the whole registry (a district's few hundred sites) read in
one query, again every ``max_age_s`` seconds, and again before refusing a message that arrived after the last
read began (a miss), so a site or node registered before its first message is never refused, and a stream of
refused messages costs at most one read per batch. Several workers each keep
their own copy; a change reaches all of them within ``max_age_s``.

Example:
    >>> SiteIn(site="willow-court", sub_district="riverside", community="east-gate", grid="g07").place.community
    'east-gate'
    >>> SiteIn(site="willow/court", sub_district="riverside", community="east-gate", grid="g07")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for SiteIn
    site
      String should match pattern '^[A-Za-z0-9._-]{1,64}$' ...
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import Field

from alerts.auth import Principal
from alerts.core.models import Place
from alerts.core.protocol import NAME_PATTERN
from alerts.identity import RegisteredSite
from alerts.store.duty import GridPlace
from alerts.store.queries import PlaceFilter, scoped_where

log = logging.getLogger(__name__)

MAX_AGE_S = 5.0
"""How old ingest's copy of the registry may grow before it is read again."""


class SiteIn(GridPlace):
    """A site's place as an operator registers it."""

    site: str = Field(pattern=NAME_PATTERN, description="The site's id: its nodes' site.id, and its topics' site.")
    name: str = Field(default="", max_length=200, description="What people call it, e.g. Willow Court compound.")

    @property
    def place(self) -> Place:
        return Place(sub_district=self.sub_district, community=self.community, grid=self.grid, site=self.site)


class Site(SiteIn):
    """A registered site and its nodes."""

    nodes: list[str] = Field(description="The node ids registered to the site, sorted.")


class RegistryError(ValueError):
    """A registration the registry refuses; the message says why and what to do."""


_UPSERT_SITE = """
INSERT INTO sites (site, name, sub_district, community, grid) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (site) DO UPDATE SET name = EXCLUDED.name, sub_district = EXCLUDED.sub_district,
    community = EXCLUDED.community, grid = EXCLUDED.grid, updated_at = now()
RETURNING (xmax = 0) AS created"""

_SITES = """
SELECT s.site, s.name, s.sub_district, s.community, s.grid,
       coalesce(array_agg(n.node_id ORDER BY n.node_id) FILTER (WHERE n.node_id IS NOT NULL), ARRAY[]::text[])
FROM sites s LEFT JOIN site_nodes n USING (site)
WHERE {where}
GROUP BY s.site ORDER BY s.site"""

_REMOVE_SITE = "DELETE FROM sites s WHERE s.site = %s AND {where} RETURNING s.site"

_NODE_SITE = "SELECT site FROM site_nodes WHERE node_id = %s FOR UPDATE"
_ADD_NODE = "INSERT INTO site_nodes (node_id, site) VALUES (%s, %s) ON CONFLICT (node_id) DO NOTHING"
# What another site wrote under the node's id before it was registered here: gone, so the node's own reports
# are taken (the store's foreign_node guard would refuse them otherwise).
_CLEAR_TAKEN = (
    "DELETE FROM nodes WHERE node_id = %(node)s AND site <> %(site)s",
    "DELETE FROM node_status WHERE node_id = %(node)s AND site <> %(site)s",
    "DELETE FROM devices WHERE node_id = %(node)s AND site <> %(site)s",
)


def _site_values(site: SiteIn) -> tuple[str, str, str, str, str]:
    return (site.site, site.name, site.sub_district, site.community, site.grid)


def _as_sites(rows: Iterable[Sequence[Any]]) -> list[Site]:
    return [
        Site(site=s, name=name, sub_district=sd, community=c, grid=g, nodes=list(nodes))
        for s, name, sd, c, g, nodes in rows
    ]


def add_site(conn: psycopg.Connection, site: SiteIn) -> bool:
    """Registers ``site``'s place, or changes it; True when the site is new."""
    row = conn.execute(_UPSERT_SITE, _site_values(site)).fetchone()
    assert row is not None  # an upsert with RETURNING always returns its row
    log.info("site %s registered in %s/%s/%s", site.site, site.sub_district, site.community, site.grid)
    return bool(row[0])


def list_sites(conn: psycopg.Connection) -> list[Site]:
    return _as_sites(conn.execute(_SITES.format(where="TRUE")).fetchall())


def remove_site(conn: psycopg.Connection, site: str) -> bool:
    """Removes the site and its nodes' registrations (ingest refuses their messages from then on); whether
    there was one."""
    return conn.execute(_REMOVE_SITE.format(where="TRUE"), (site,)).fetchone() is not None


def add_node(conn: psycopg.Connection, site: str, node: str) -> None:
    """Registers ``node`` to ``site`` and clears what another site wrote under its id, in the caller's
    transaction (``patrolnet broker add-node`` commits it once the broker has made the credential);
    RegistryError when the site is not registered or the node belongs to another site."""
    if conn.execute("SELECT 1 FROM sites WHERE site = %s", (site,)).fetchone() is None:
        raise RegistryError(f"site {site!r} is not registered: patrolnet site add {site} --sub-district ...")
    conn.execute(_ADD_NODE, (node, site))
    row = conn.execute(_NODE_SITE, (node,)).fetchone()
    if row is not None and row[0] != site:
        raise RegistryError(f"node {node!r} is registered to site {row[0]!r}: remove it there first")
    for sql in _CLEAR_TAKEN:
        cleared = conn.execute(sql, {"node": node, "site": site}).rowcount
        if cleared:
            log.warning("node %s: cleared %d rows another site wrote under its id (%s)", node, cleared, sql)


def remove_node(conn: psycopg.Connection, node: str) -> bool:
    """Removes ``node``'s registration (ingest refuses what is sent under its id); whether there was one."""
    return conn.execute("DELETE FROM site_nodes WHERE node_id = %s", (node,)).rowcount > 0


def register(conninfo: str, place: Place, *nodes: str, name: str = "") -> None:
    """Registers ``place``'s site and ``nodes`` under it, in one transaction: what ``patrolnet site add`` and
    ``patrolnet broker add-node`` do, for the local demo, the benchmarks and the tests."""
    with psycopg.connect(conninfo) as conn:
        add_site(conn, SiteIn(**place.model_dump(exclude={"device"}), name=name))
        for node in nodes:
            add_node(conn, place.site, node)


async def list_sites_within(pool: AsyncConnectionPool, who: Principal, flt: PlaceFilter | None) -> list[Site]:
    """The registered sites within the caller's scope and the filter, by id."""
    where, params = scoped_where(who, flt, "s")
    async with pool.connection() as conn:
        return _as_sites(await (await conn.execute(_SITES.format(where=where), params)).fetchall())


async def put_site(pool: AsyncConnectionPool, who: Principal, site: SiteIn) -> bool | None:
    """``add_site`` on the API's pool, changing a registered site only if it lies within the caller's scope (the
    new place is the caller's to check); True when the site is new, False when changed, None when refused."""
    where, params = scoped_where(who, None, "sites")
    sql = _UPSERT_SITE.replace("updated_at = now()", f"updated_at = now() WHERE {where}")
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, [*_site_values(site), *params])).fetchone()
    return None if row is None else bool(row[0])


async def remove_site_within(pool: AsyncConnectionPool, who: Principal, site: str) -> bool:
    """Removes the site if it lies within the caller's scope; whether it did."""
    where, params = scoped_where(who, None, "s")
    async with pool.connection() as conn:
        return await (await conn.execute(_REMOVE_SITE.format(where=where), [site, *params])).fetchone() is not None


def _registered(site: Site) -> RegisteredSite:
    return RegisteredSite(place=site.place, nodes=frozenset(site.nodes), name=site.name)


class SiteRegistry:
    """One ingest worker's cached copy of the registry, on a connection of its own; used from one thread.

    ``get`` raises psycopg.OperationalError when the registry must be read and the database is away: the
    caller keeps the message and asks again, it never refuses a message it could not check.
    """

    def __init__(self, conninfo: str, max_age_s: float = MAX_AGE_S) -> None:
        self.conninfo = conninfo
        self.max_age_s = max_age_s
        self.reads = 0
        self._sites: dict[str, RegisteredSite] = {}
        self._read_at = float("-inf")
        self._conn: psycopg.Connection | None = None

    def get(self, site: str, fresh: bool = False, arrived_at: float | None = None) -> RegisteredSite | None:
        """What the registry knows of ``site`` (None: not registered). ``fresh``: for a message the copy would
        refuse, which ``arrived_at`` (``time.monotonic``; None: now): read again if it arrived after the copy
        was read, since the site or node may have been registered meanwhile."""
        now = time.monotonic()
        arrived = arrived_at if arrived_at is not None else now
        if now - self._read_at > self.max_age_s or (fresh and arrived >= self._read_at):
            self._read()
        return self._sites.get(site)

    def _read(self) -> None:
        started = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.conninfo, autocommit=True)
            sites = _as_sites(self._conn.execute(_SITES.format(where="TRUE")).fetchall())
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise
        self._sites = {s.site: _registered(s) for s in sites}
        self._read_at = started
        self.reads += 1

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
