"""Identity bound to the topic: what a node sends speaks only for the site its broker credentials cover.

The central broker lets a node publish only under ``patrolnet/v1/<its site>/``, so the
topic's site is the sender's identity; the place inside the payload is the sender's
claim. Ingest refuses a claim that differs from the identity (``bound_to``), and the
store refuses a copy of an alert from a site other than the one that raised it
(``foreign_copy``), so a node cannot raise, update or clear another community's alarms, and a heartbeat
or status naming a node of another site (``foreign_node``), so it cannot take over that node's health.
Each refusal is a reason string, which ingest keeps with the message as a dead letter.

Example:
    >>> from alerts.core.models import Alert, Heartbeat, NodeStatus, Place
    >>> place = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court")
    >>> alert = Alert(kind="fire", type="smoke", severity="critical", route="fire", place=place, source="n1",
    ...               dedup_key="k")
    >>> bound_to("willow-court", alert) is alert
    True
    >>> bound_to("oak-yard", alert)
    Traceback (most recent call last):
    ...
    ValueError: payload place.site 'willow-court' differs from the topic's site 'oak-yard'
    >>> foreign_copy("oak-yard", alert).split("; ")[1]
    "a copy from site 'willow-court' may not change it"
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar

from alerts.core.models import Alert, Heartbeat, NodeStatus, Place

log = logging.getLogger(__name__)


class _Placed(Protocol):
    @property
    def place(self) -> Place: ...


Sent = TypeVar("Sent", bound="_Placed | list[_Placed]")


def site_mismatch(topic_site: str, sent: _Placed | list[_Placed]) -> str | None:
    """Why ``sent`` (one placed object, or a list of them) does not belong on ``topic_site``; None if it does."""
    for item in sent if isinstance(sent, list) else [sent]:
        if item.place.site != topic_site:
            return f"payload place.site {item.place.site!r} differs from the topic's site {topic_site!r}"
    return None


def bound_to(topic_site: str, sent: Sent) -> Sent:
    """``sent`` itself when its place is the topic's site; ValueError with the reason otherwise."""
    reason = site_mismatch(topic_site, sent)
    if reason is not None:
        raise ValueError(reason)
    return sent


def foreign_node(registered_site: str | None, sent: Heartbeat | NodeStatus) -> str | None:
    """Why ``sent`` (a heartbeat or an online status) may not speak for its node, which site ``registered_site``
    registered; None if it may (same site, or a node not seen before: ``registered_site`` None).

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
