"""Identity the centre knows: what a node sends speaks only for its site, in the place the registry gives it.

The central broker lets a node's credential publish only under ``patrolnet/v1/<its site>/`` (a dynamic-security
role per site, ``alerts.intake.broker_auth``), so the topic's site is the sender's identity. Everything else a
payload says about where it is, is a claim. The site registry (``alerts.store.sites``) holds each site's
sub-district, community and grid, by which every desk is scoped, and the node ids that belong to the site.
Ingest refuses (``registry_mismatch``) a message from a site that is not registered, one whose place differs
from its site's registered place in any level, and one naming a node (a heartbeat's or status's ``node_id``,
an event's or alert's ``source``) that is not registered to the topic's site. So nothing a desk is scoped by
is ever taken from a payload: the payload must say what the registry says, or it is not stored.

The store keeps two guards of its own: a copy of an alert from a site other than the one that raised it
(``foreign_copy``: same alert id, another site), and a heartbeat or status of a node whose stored rows
another site wrote (``foreign_node``: a row from before the registry, or a node moved to another site while a
worker's registry was a few seconds old). Each refusal is a reason string, which ingest keeps with the
message as a dead letter.

What the binding does not cover: the broker's roles are per site, so two nodes of one site share its topics,
and either could send a heartbeat naming the other (both are registered to that site). MQTT 5 user
properties would not help: the sender sets them, and they prove nothing.

Example:
    >>> from alerts.core.models import Alert, Heartbeat, NodeStatus, Place
    >>> place = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")
    >>> known = RegisteredSite(place=place, nodes=frozenset({"willow-court-01"}))
    >>> alert = Alert(kind="fire", type="smoke", severity="critical", route="fire", place=place,
    ...               source="willow-court-01", dedup_key="k")
    >>> registry_mismatch("willow-court", known, alert) is None
    True
    >>> registry_mismatch("oak-yard", None, alert)
    "payload place.site 'willow-court' differs from the topic's site 'oak-yard'"
    >>> registry_mismatch("willow-court", None, alert)
    "site 'willow-court' is not registered (patrolnet site add)"
    >>> west = alert.model_copy(update={"place": place.model_copy(update={"community": "west-lake"})})
    >>> registry_mismatch("willow-court", known, west)
    "payload place.community 'west-lake' differs from site 'willow-court''s registered community 'east-gate'"
    >>> foreign_copy("oak-yard", alert).split("; ")[1]
    "a copy from site 'willow-court' may not change it"
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Protocol

from alerts.core.models import Alert, Event, Heartbeat, NodeStatus, Place, Snapshot

log = logging.getLogger(__name__)

REGISTERED_LEVELS = ("sub_district", "community", "grid")
"""The levels of a place the registry gives a site (the site is the topic's)."""


class _Placed(Protocol):
    @property
    def place(self) -> Place: ...


@dataclass(frozen=True)
class RegisteredSite:
    """What the centre knows of one site: its place (no device) and the node ids registered to it."""

    place: Place
    nodes: frozenset[str]
    name: str = ""

    @cached_property
    def levels(self) -> tuple[str, str, str]:
        """The place's REGISTERED_LEVELS, in their order."""
        return self.place.sub_district, self.place.community, self.place.grid


@cache
def _node_field(kind: type) -> str | None:
    """The field by which objects of type ``kind`` name their node, found once a type: a batch has hundreds."""
    if issubclass(kind, Heartbeat | NodeStatus | Snapshot):
        return "node_id"
    if issubclass(kind, Event | Alert):
        return "source"
    return None


def node_of(sent: object) -> str | None:
    """The node id ``sent`` speaks for: a heartbeat's, status's or snapshot's node, an event's or alert's source;
    None for what names no node (readings, a node's dead letters).

    >>> node_of(NodeStatus(node_id="n1", place=Place(sub_district="s", community="c", grid="g", site="x"),
    ...                    online=True))
    'n1'
    """
    kind: type = type(sent)  # declared: mypy holds type[object] not hashable
    field = _node_field(kind)
    return None if field is None else getattr(sent, field)


def _item_mismatch(topic_site: str, registered: RegisteredSite | None, item: _Placed) -> str | None:
    place = item.place
    if place.site != topic_site:
        return f"payload place.site {place.site!r} differs from the topic's site {topic_site!r}"
    if registered is None:
        return f"site {topic_site!r} is not registered (patrolnet site add)"
    # One comparison for the place a reading agrees with, as nearly all do: a batch has hundreds.
    if (place.sub_district, place.community, place.grid) != registered.levels:
        for level in REGISTERED_LEVELS:
            claimed, known = getattr(place, level), getattr(registered.place, level)
            if claimed != known:
                return (
                    f"payload place.{level} {claimed!r} differs from site {topic_site!r}'s registered {level} {known!r}"
                )
    node = node_of(item)
    if node is not None and node not in registered.nodes:
        return f"node {node!r} is not registered to site {topic_site!r} (patrolnet broker add-node)"
    return None


def registry_mismatch(topic_site: str, registered: RegisteredSite | None, sent: _Placed | list[_Placed]) -> str | None:
    """Why ``sent`` (one placed object, or a list of them), published on ``topic_site``'s topic, may not be
    stored, given what the registry knows of that site (None: not registered); None if it may."""
    for item in sent if isinstance(sent, list) else [sent]:
        reason = _item_mismatch(topic_site, registered, item)
        if reason is not None:
            return reason
    return None


def foreign_node(registered_site: str | None, sent: Heartbeat | NodeStatus) -> str | None:
    """Why ``sent`` (a heartbeat or an online status) may not speak for its node, whose stored rows site
    ``registered_site`` wrote; None if it may (same site, or a node not seen before: ``registered_site`` None).

    >>> beat = Heartbeat(node_id="node-b", place=Place(sub_district="r", community="e", grid="g", site="elm-row"),
    ...                  started_at="2026-01-01T00:00:00Z")
    >>> foreign_node("oak-yard", beat)
    "node 'node-b' belongs to site 'oak-yard'; site 'elm-row' may not speak for it"
    """
    if registered_site is None or registered_site == sent.place.site:
        return None
    return f"node {sent.node_id!r} belongs to site {registered_site!r}; site {sent.place.site!r} may not speak for it"


def foreign_copy(raised_by: str | None, alert: Alert) -> str | None:
    """Why a copy of ``alert`` may not change the alert that site ``raised_by`` raised; None if it may
    (same site, or an alert not seen before: ``raised_by`` None)."""
    if raised_by is None or raised_by == alert.place.site:
        return None
    return f"alert {alert.id} was raised by site {raised_by!r}; a copy from site {alert.place.site!r} may not change it"
