"""OASIS CAP 1.2 (Common Alerting Protocol) documents of alerts, for alerting systems that speak it.

One alert at one moment is one CAP message, with one ``<info>`` per language (zh-CN, then en-US): the event,
headline and description in that language, built from the alert's type and attributes (``alerts.notify.wording``).
Its identifier names the alert, its revision and its status, so each state is a distinct message; the first is
``msgType`` Alert, later ones are Update (Cancel for a false alarm) and reference the first. Elements follow the
order of the CAP 1.2 schema.

Example:
    >>> from alerts.core.models import Place, Role
    >>> from alerts.store.rows import StoredAlert
    >>> place = Place(sub_district="riverside", community="east-gate", grid="g07", site="willow-court",
    ...               device="smoke-1")
    >>> alert = StoredAlert(kind="fire", type="smoke", severity="critical", place=place, source="n1",
    ...                     route=Role.FIRE, dedup_key="k", title="Smoke alarm",
    ...                     readings={"smoke": 1.0}, confirmed=True, confirmed_by=["smoke-1", "smoke-2"])
    >>> import xml.etree.ElementTree as ET
    >>> message = cap_alert(alert, sender="patrolnet", base="https://alerts.example")
    >>> root = ET.fromstring(cap_document(message))
    >>> [root.find(f"cap:{n}", NS).text for n in ("status", "msgType", "scope")]
    ['Actual', 'Alert', 'Restricted']
    >>> zh, en = root.findall("cap:info", NS)
    >>> [en.find(f"cap:{n}", NS).text for n in ("category", "urgency", "severity", "certainty")]
    ['Fire', 'Immediate', 'Extreme', 'Observed']
    >>> [(i.findtext("cap:language", namespaces=NS), i.findtext("cap:event", namespaces=NS)) for i in (zh, en)]
    [('zh-CN', '烟雾'), ('en-US', 'smoke')]
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from alerts.core.models import AlertStatus, EventKind, Severity
from alerts.notify.wording import LANGUAGES, TYPES, pair, title
from alerts.store.people import Language
from alerts.store.rows import StoredAlert

log = logging.getLogger(__name__)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
NS = {"cap": CAP_NS, "atom": ATOM_NS}
CAP_TYPE = "application/cap+xml"
DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"
GEOCODES = ("sub_district", "community", "grid", "site")
_TEXT = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
# Characters XML 1.0 allows nowhere, not even escaped; a node's title or a device name could carry one, and one such
# alert would make every feed page it is on unreadable to a CAP client.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_CONTROLS = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_ATTRIBUTE = (*_TEXT, ('"', "&quot;"), ("\r", "&#13;"), ("\n", "&#10;"), ("\t", "&#09;"))

CATEGORY = {EventKind.FIRE: "Fire", EventKind.SECURITY: "Security", EventKind.TROUBLE: "Infra",
            EventKind.REPORT: "Security", EventKind.ENFORCEMENT: "Other"}  # fmt: skip
SEVERITY = {Severity.CRITICAL: "Extreme", Severity.MAJOR: "Severe", Severity.MINOR: "Moderate",
            Severity.INFO: "Minor"}  # fmt: skip
CAP_LANGUAGE: dict[Language, str] = {"zh-CN": "zh-CN", "en": "en-US"}
"""Each language's RFC 3066 code in CAP: one ``<info>`` per language, Chinese first."""
RESOURCE_DESC = {"camera": ("摄像头截图", "camera snapshot"), "reporter": ("举报人照片", "reporter's photo"),
                 "clip": ("视频片段", "video clip")}  # fmt: skip
ENUMS = {
    "status": {"Actual", "Exercise", "System", "Test", "Draft"},
    "msgType": {"Alert", "Update", "Cancel", "Ack", "Error"},
    "scope": {"Public", "Restricted", "Private"},
    "category": {"Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra",
                 "CBRNE", "Other"},
    "urgency": {"Immediate", "Expected", "Future", "Past", "Unknown"},
    "severity": {"Extreme", "Severe", "Moderate", "Minor", "Unknown"},
    "certainty": {"Observed", "Likely", "Possible", "Unlikely", "Unknown"},
}  # fmt: skip
"""The values CAP 1.2 allows for its enumerated elements."""


def cap_time(ts: datetime) -> str:
    """CAP's date-time: seconds, an explicit offset, never "Z".

    >>> from datetime import UTC
    >>> cap_time(datetime(2024, 5, 1, 12, 30, 5, 123, tzinfo=UTC))
    '2024-05-01T12:30:05+00:00'
    """
    return ts.isoformat(timespec="seconds")


def identifier(alert: StoredAlert, revision: int | None = None, status: AlertStatus | None = None) -> str:
    return f"urn:patrolnet:alert:{alert.id}:{revision or alert.revision}:{status or alert.status}"


def _sent(alert: StoredAlert) -> datetime:
    return max(t for t in (alert.ts, alert.last_seen, alert.status_at) if t is not None)


def _msg_type(alert: StoredAlert) -> str:
    if alert.status is AlertStatus.FALSE_ALARM:
        return "Cancel"
    return "Alert" if alert.revision == 1 and alert.status is AlertStatus.NEW else "Update"


def _urgency(alert: StoredAlert) -> str:
    if not alert.active or alert.status in (AlertStatus.RESOLVED, AlertStatus.FALSE_ALARM):
        return "Past"
    return "Immediate" if alert.severity in (Severity.CRITICAL, Severity.MAJOR) else "Expected"


def _parameters(alert: StoredAlert) -> list[tuple[str, str]]:
    params = [("kind", alert.kind.value), ("device", alert.place.device or ""), ("events", str(alert.count)),
              ("active", str(alert.active).lower()), ("status", alert.status.value),
              ("confirmed", str(bool(alert.confirmed)).lower()),
              ("confirmedBy", ",".join(alert.confirmed_by))]  # fmt: skip
    if alert.on_duty:
        params.append(("onDuty", alert.on_duty))
    params += [(f"reading:{name}", str(value)) for name, value in sorted(alert.readings.items())]
    return [(name, value) for name, value in params if value]


def _description(alert: StoredAlert, headline: str, where: str, language: Language) -> str:
    if language == "en":
        state = "ongoing" if alert.active else "cleared"
        return f"{headline} at {where}: {state}, {alert.count} event(s)."
    state = "持续中" if alert.active else "已消除"
    return f"{headline}，地点：{where}；{state}，共{alert.count}次事件。"


def _escape(text: str, entities: tuple[tuple[str, str], ...] = _TEXT) -> str:
    for char, entity in entities:
        if char in text:  # most values have none: a test is cheaper than a replace
            text = text.replace(char, entity)
    return text


def _element(name: str, text: str) -> str:
    return f"<{name}>{_escape(text)}</{name}>"


def _pair(outer: str, name: str, value: str) -> str:
    return f"<{outer}><valueName>{_escape(name)}</valueName><value>{_escape(value)}</value></{outer}>"


def _info(alert: StoredAlert, language: Language, base: str, snapshots: list[tuple[str, str]]) -> tuple[str, str]:
    """One ``<info>``, the alert in one language, and its headline."""
    index = LANGUAGES.index(language)
    place = alert.place
    where = ", ".join(p for p in (place.device, place.site, place.grid, place.community, place.sub_district) if p)
    headline = title(alert.type, alert.attributes, place.device or place.site, alert.title, language)
    parts = [
        "<info>",
        _element("language", CAP_LANGUAGE[language]),
        _element("category", CATEGORY[alert.kind]),
        _element("event", pair(TYPES, alert.type)[index]),
        _element("urgency", _urgency(alert)),
        _element("severity", SEVERITY[alert.severity]),
        _element("certainty", "Observed" if alert.confirmed else "Likely"),
        _element("senderName", alert.source),
        _element("headline", headline[:160]),
        _element("description", _description(alert, headline, where, language)),
        _element("web", f"{base}/api/v1/alerts/{alert.id}"),
    ]
    parts += [_pair("parameter", name, value) for name, value in _parameters(alert)]
    picture = "camera" if alert.kind is not EventKind.REPORT else "reporter"
    for url, mime in snapshots:
        desc = RESOURCE_DESC["clip" if mime.startswith("video/") else picture][index]
        parts.append(
            f"<resource>{_element('resourceDesc', desc)}{_element('mimeType', mime)}{_element('uri', url)}</resource>"
        )
    parts.append(f"<area>{_element('areaDesc', where)}")
    parts += [_pair("geocode", f"patrolnet:{level}", getattr(place, level)) for level in GEOCODES]
    parts.append("</area></info>")
    return "".join(parts), headline[:160]


@dataclass(frozen=True, slots=True)
class CapMessage:
    """One CAP ``<alert>`` element (its namespace declared on it) and its Atom entry, each as the UTF-8 a response
    carries (``_encoded``), and what the entry names of it. Both are written once a message: encoding and checking
    every page of a feed whole took a third of the API's time a page."""

    identifier: str
    sender: str
    sent: str
    headline: str
    xml: bytes
    entry: bytes


def cap_alert(alert: StoredAlert, sender: str, base: str, snapshots: list[tuple[str, str]] | None = None) -> CapMessage:
    """The CAP 1.2 ``<alert>`` of an alert; ``snapshots`` are (URL, MIME type) of its events' pictures and its
    video clips (video/mp4). Written as text, element by element in the schema's order: a feed page is thousands of
    elements, and building a tree to write it cost four times as much."""
    ident, sent = identifier(alert), cap_time(_sent(alert))
    msg_type = _msg_type(alert)
    parts = [
        f'<alert xmlns="{CAP_NS}">',
        _element("identifier", ident),
        _element("sender", sender),
        _element("sent", sent),
        "<status>Actual</status>",
        _element("msgType", msg_type),
        "<scope>Restricted</scope>",
        _element("restriction", f"patrolnet {alert.route.value} desks of {alert.place.community}"),
    ]
    if msg_type != "Alert":
        first = identifier(alert, revision=1, status=AlertStatus.NEW)
        parts.append(_element("references", f"{sender},{first},{cap_time(alert.ts)}"))
    parts.append(_element("incidents", str(alert.id)))
    infos = [_info(alert, language, base, snapshots or []) for language in LANGUAGES]
    parts += [info for info, _ in infos]
    parts.append("</alert>")
    xml, headline = _encoded("".join(parts)), infos[0][1]
    entry = [
        "<entry>",
        _element("id", ident),
        _element("title", headline),
        _element("updated", sent),
        f"<author>{_element('name', sender)}</author>",
        f'<content type="{CAP_TYPE}">',
    ]
    return CapMessage(ident, sender, sent, headline, xml, _encoded("".join(entry)) + xml + b"</content></entry>")


class CapMessages:
    """The CAP messages written lately, by everything one is written from: a version of the alert, the sender, the
    base URL and the snapshots. A version names one state of the alert's every field: its JSON, or, as the feed
    reads it, its id and the row's ``xmin`` (``alerts.store.alert_queries.ALERT_VERSION``), which every change to
    the row renews. A feed page is mostly alerts that have not changed since the last page a client read; their
    messages are then looked up instead of written (65 us each), and the database writes none of their JSON. A
    changed field, a new clip or another sender is another key: a message is never stale. The oldest of more than
    ``size`` are forgotten.

    Example:
        >>> from alerts.core.models import Place, Role
        >>> place = Place(sub_district="r", community="e", grid="g", site="s", device="smoke-1")
        >>> alert = StoredAlert(kind="fire", type="smoke", severity="critical", place=place, source="n1",
        ...                     route=Role.FIRE, dedup_key="k")
        >>> messages = CapMessages(size=2)
        >>> first = messages.of(alert, "patrolnet", "https://a.example")
        >>> messages.of(alert, "patrolnet", "https://a.example") is first, first == cap_alert(alert, "patrolnet",
        ...     "https://a.example")
        (True, True)
        >>> seen = alert.model_copy(update={"status": AlertStatus.ACKNOWLEDGED, "revision": 2})
        >>> messages.of(seen, "patrolnet", "https://a.example").identifier.endswith(":2:acknowledged")
        True
        >>> messages.kept("its id:its xmin", "patrolnet", "https://a.example", []) is None
        True
        >>> messages.keep("its id:its xmin", "patrolnet", "https://a.example", [], seen) == messages.kept(
        ...     "its id:its xmin", "patrolnet", "https://a.example", [])
        True
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[str, str, str, tuple[tuple[str, str], ...]], CapMessage] = OrderedDict()

    def of(
        self, alert: StoredAlert, sender: str, base: str, snapshots: list[tuple[str, str]] | None = None
    ) -> CapMessage:
        """``cap_alert``'s message, written once for the same inputs (the alert's version is its JSON)."""
        version = alert.model_dump_json()
        return self.kept(version, sender, base, snapshots) or self.keep(version, sender, base, snapshots, alert)

    def kept(
        self, version: str, sender: str, base: str, snapshots: list[tuple[str, str]] | None = None
    ) -> CapMessage | None:
        """The message kept for these inputs, if one is."""
        key = (version, sender, base, tuple(snapshots or ()))
        message = self._kept.get(key)
        if message is not None:
            self._kept.move_to_end(key)
        return message

    def keep(
        self, version: str, sender: str, base: str, snapshots: list[tuple[str, str]] | None, alert: StoredAlert
    ) -> CapMessage:
        """``cap_alert``'s message of ``alert``, which is the state ``version`` names, kept under these inputs."""
        message = cap_alert(alert, sender, base, snapshots)
        self._kept[(version, sender, base, tuple(snapshots or ()))] = message
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return message


def _encoded(document: str) -> bytes:
    """The document's UTF-8, each character XML cannot carry replaced by U+FFFD (none is in the markup itself).
    Looked for in the bytes, where C loops find them in a tenth of the regular expression's time."""
    data = document.encode()
    if len(data.translate(None, _CONTROLS)) != len(data) or b"\xef\xbf\xbe" in data or b"\xef\xbf\xbf" in data:
        data = _NOT_XML.sub("\ufffd", document).encode()
    return data


def cap_document(message: CapMessage) -> bytes:
    return DECLARATION.encode() + message.xml


def atom_feed(messages: list[CapMessage], title: str, self_url: str, updated: datetime) -> bytes:
    """An Atom feed with one entry per CAP message, the message itself as the entry's content."""
    head = [
        DECLARATION,
        f'<feed xmlns="{ATOM_NS}">',
        _element("id", self_url),
        _element("title", title),
        _element("updated", cap_time(updated)),
        f'<link rel="self" href="{_escape(self_url, _ATTRIBUTE)}" />',
    ]
    return b"".join([_encoded("".join(head)), *(m.entry for m in messages), b"</feed>"])
