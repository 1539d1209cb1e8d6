"""Coverage notices: the desks a trouble alert concerns besides the operators who fix it.

A trouble that blinds part of the system goes to the operators to repair, and,
as a coverage notice (``Alert.notify``), to each desk whose alarms the blind
device feeds, so that a fire brigade knows the detectors of a building are not
watching. The centre derives the desks from the trouble's type when it stores
the alert: a node offline concerns every desk; a sensor offline or silent the
fire desk (patrolnet's sensors are fire sensors); a camera offline or tampered
with the police desk, and the fire desk too when the camera is linked to a fire
sensor (its picture verifies that sensor's alarms; the node reports the links
as ``cameras`` in its sensors' heartbeat detail). Other trouble (a low battery,
a sensor's tamper switch) still leaves the device watching: operators only.

A coverage notice is information for the desks it names, not theirs to close: only a role that reads the
alert's kind (the operator, and admin) may acknowledge or resolve it (``may_change``).

Example:
    >>> coverage_desks("sensor_silent", linked=False)
    [<Role.FIRE: 'fire'>]
    >>> coverage_desks("camera_offline", linked=True)
    [<Role.POLICE: 'police'>, <Role.FIRE: 'fire'>]
    >>> coverage_desks("battery_low", linked=False)
    []
    >>> from alerts.core.models import Place
    >>> notice = Alert(kind=EventKind.TROUBLE, type="sensor_silent", severity="major", source="n1",
    ...     place=Place(sub_district="n", community="c", grid="g", site="s", device="smoke-1"),
    ...     route=Role.OPERATOR, dedup_key="s/smoke-1/trouble/sensor_silent/", notify=[Role.FIRE])
    >>> may_change(Principal(name="desk", role=Role.FIRE), notice)
    'role fire reads this trouble alert as a coverage notice, for information: only the operator desk may act on it'
    >>> may_change(Principal(name="ops", role=Role.OPERATOR), notice) is None
    True
"""

from __future__ import annotations

import logging

import psycopg

from alerts.auth import Principal
from alerts.core.models import ROUTES, Alert, EventKind, Role

log = logging.getLogger(__name__)

NODE_OFFLINE = "node_offline"
SENSOR_TYPES = frozenset({"sensor_offline", "sensor_silent"})
CAMERA_TYPES = frozenset({"camera_offline", "camera_blinded", "camera_defocused", "camera_moved"})

_LINKED_CAMERAS = """
SELECT DISTINCT d.site, camera FROM devices d, jsonb_array_elements_text(
    CASE WHEN jsonb_typeof(d.detail -> 'cameras') = 'array' THEN d.detail -> 'cameras' ELSE '[]' END) camera
WHERE d.site = ANY(%s) AND d.type <> 'camera'"""


def coverage_desks(trouble_type: str, linked: bool) -> list[Role]:
    """The desks a trouble of this type on a device concerns; ``linked``: a camera linked to a fire sensor."""
    if trouble_type == NODE_OFFLINE:
        return [Role.FIRE, Role.POLICE]
    if trouble_type in SENSOR_TYPES:
        return [Role.FIRE]
    if trouble_type in CAMERA_TYPES:
        return [Role.POLICE, Role.FIRE] if linked else [Role.POLICE]
    return []


def with_coverage(cur: psycopg.Cursor, alerts: list[Alert]) -> list[Alert]:
    """The alerts with ``notify`` set on coverage trouble; desks a node named already are kept."""
    camera_sites = sorted({a.place.site for a in alerts if a.kind is EventKind.TROUBLE and a.type in CAMERA_TYPES})
    linked: set[tuple[str, str]] = set()
    if camera_sites:
        linked = {(site, camera) for site, camera in cur.execute(_LINKED_CAMERAS, (camera_sites,)).fetchall()}
    out = []
    for alert in alerts:
        if alert.kind is not EventKind.TROUBLE:
            out.append(alert)
            continue
        desks = coverage_desks(alert.type, (alert.place.site, alert.place.device) in linked)
        notify = sorted({*alert.notify, *desks})
        out.append(alert.model_copy(update={"notify": notify}) if notify != alert.notify else alert)
    return out


def may_change(who: Principal, alert: Alert) -> str | None:
    """Why ``who`` may not acknowledge, resolve or dismiss ``alert``, or None when it may: a desk reading an
    alert only as a coverage notice (not of a kind its role reads) may not close it for the desk that fixes it."""
    if alert.kind in who.kinds:
        return None
    return (
        f"role {who.role} reads this {alert.kind} alert as a coverage notice, for information:"
        f" only the {ROUTES[alert.kind]} desk may act on it"
    )
