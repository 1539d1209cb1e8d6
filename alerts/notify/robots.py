"""Chat-group robots: alert changes as WeCom (企业微信), DingTalk (钉钉) and Feishu (飞书) group messages.

A robot is a webhook of another format (``alerts.store.webhook_registry``): the trigger queues its deliveries,
the webhook dispatchers claim, lease, retry and log them, and this module says what each message is, how each
robot wants it signed, what its answer means, and how many it may take.

- WeCom: the key is in the URL. markdown (mentions ``<@userid>``), text (``mentioned_list`` and
  ``mentioned_mobile_list``) or a news card linking to the alert; a raised alert's snapshot follows as an
  image message (base64 and md5 of the raw JPEG or PNG, at most 2 MB).
- DingTalk: ``timestamp`` (ms) and ``sign`` query parameters (the URL-encoded base64 of HMAC-SHA256 of
  "{timestamp}\\n{secret}" keyed by the secret); markdown with ``at`` by mobile and user id, or an actionCard
  whose button opens the alert.
- Feishu: ``timestamp`` (s) and ``sign`` in the body (base64 of HMAC-SHA256 of an empty message keyed by
  "{timestamp}\\n{secret}"); an interactive card, post or text.

All three answer HTTP 200 with a code in the body (``errcode``; Feishu ``code``): a non-zero code is a failed
delivery, retried and logged with the code and message. Links need ``PATROLNET_PUBLIC_URL``; without it, news
and actionCard messages go as markdown and cards have no button.

Each robot takes about 20 messages a minute, and DingTalk blocks one that sends more for 10 minutes. The
limiter never exceeds a robot's ``per_minute`` in any ``window_s`` seconds, whichever dispatcher sends (its
accounting is in the database, under the robot's row lock): a dispatcher claims all of a robot's due
deliveries at once and sends them one by one while they fit, and when they do not, as many as leave one
message free, then one summary of the rest ("另有 12 条告警 12 more alerts: ..."). When there is no room at
all they are held, untried, until the oldest counted message may leave the window (one still in flight is
looked at again then), and then everything waiting goes in one summary. Nothing is dropped.

Example:
    >>> dingtalk_sign(1700000000000, "SECabc")
    'jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D'
    >>> feishu_sign(1700000000, "SECabc")
    'XprR1de+0SSBnwWyU/4k6x2TL+Q2SJlM5NNEdAv7MWg='
    >>> robot_error("dingtalk", b'{"errcode":130101,"errmsg":"send too fast"}'), robot_error("feishu", b'{"code":0}')
    ('errcode 130101: send too fast', None)
    >>> plan([1, 1, 1], room=5), plan([1, 1, 1, 1, 1, 1], room=5), plan([2, 1], room=2), plan([1], room=0)
    ((3, False), (4, True), (0, True), (0, False))
    >>> plan([1, 1], room=5, held=True)
    (0, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote_plus

import psycopg

from alerts.core.models import Severity
from alerts.notify.wording import CHANGES, KINDS, LABELS, SEVERITIES, TYPES, both, headline
from alerts.store import webhook_registry as registry
from alerts.store.rows import StoredAlert
from alerts.store.webhook_registry import Robot, RobotDelivery

log = logging.getLogger(__name__)

IMAGE_MAX_BYTES = 2 * 1024 * 1024
"""WeCom takes pictures up to 2 MB before base64."""
_WECOM_BYTES = {"markdown": 4096, "text": 2048}
"""WeCom's content limits, in UTF-8 bytes."""
SUMMARY_GROUPS = 12
"""Lines of a summary (one per kind, type and change); the rest are counted in one more."""
SUMMARY_SITES = 5
_COLOURS = {Severity.CRITICAL: "red", Severity.MAJOR: "orange", Severity.MINOR: "yellow", Severity.INFO: "blue"}

Body = dict[str, Any]
Answer = Callable[[bytes], str | None]
Send = Callable[[str, bytes, Answer], tuple[int | None, str | None]]
"""POSTs (url, body) and reads the robot's answer with the given function: (HTTP status, why it failed)."""


@dataclass(frozen=True)
class Note:
    """What one message says, whichever robot shows it."""

    title: str
    lines: tuple[str, ...]
    link: str | None
    link_label: str
    severity: Severity


@dataclass(frozen=True)
class Outcome:
    """How one delivery went: recorded by the dispatcher as any webhook delivery is."""

    delivery_id: int
    attempts: int
    url: str
    status: int | None
    error: str | None
    folded: bool = False


Record = Callable[[psycopg.Connection, Outcome], None]


def _label(key: str, value: str) -> str:
    return f"{both(LABELS, key)}: {value}"


def alert_note(alert: StoredAlert, change: str, public_url: str) -> Note:
    """The message of one alert change, from its kind, type, place and severity (not its English title alone)."""
    place = alert.place
    where = " / ".join(p for p in (place.sub_district, place.community, place.grid, place.site, place.device) if p)
    lines = [
        _label("change", both(CHANGES, change)),
        _label("severity", both(SEVERITIES, alert.severity)),
        _label("place", where),
        _label("time", f"{alert.ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"),
    ]
    if alert.on_duty:
        lines.append(_label("on_duty", " ".join(filter(None, (alert.on_duty, alert.on_duty_contact)))))
    if alert.title:
        lines.append(_label("detail", alert.title[:200]))
    return Note(
        title=headline(alert.kind, alert.type, place.site),
        lines=tuple(lines),
        link=f"{public_url}/#open={alert.id}" if public_url else None,
        link_label=both(LABELS, "open"),
        severity=alert.severity,
    )


def summary_note(changes: list[tuple[StoredAlert, str]], public_url: str) -> Note:
    """One message for many alert changes: how many of each kind, type and change, and where."""
    groups: dict[tuple[str, str, str], Counter[str]] = {}
    for alert, change in changes:
        groups.setdefault((alert.kind, alert.type, change), Counter())[alert.place.site] += 1
    ordered = sorted(groups.items(), key=lambda item: -item[1].total())
    lines = []
    for (kind, type_, change), sites in ordered[:SUMMARY_GROUPS]:
        at = ", ".join(f"{site} ×{n}" for site, n in sites.most_common(SUMMARY_SITES))
        more_sites = " …" if len(sites) > SUMMARY_SITES else ""
        lines.append(
            f"{sites.total()} × {both(KINDS, kind)} {both(TYPES, type_)}, {both(CHANGES, change)}: {at}{more_sites}"
        )
    if rest := sum(sites.total() for _, sites in ordered[SUMMARY_GROUPS:]):
        lines.append(f"其他 {rest} 条 {rest} others")
    severities = list(Severity)
    return Note(
        title=f"另有 {len(changes)} 条告警 {len(changes)} more alerts",
        lines=tuple(lines),
        link=f"{public_url}/" if public_url else None,
        link_label=both(LABELS, "open_page"),
        severity=max((alert.severity for alert, _ in changes), key=severities.index),
    )


def _clip(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8 (with an ellipsis), never inside a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    return raw[: max_bytes - 3].decode(errors="ignore") + "…"


def _markdown(note: Note, newline: str, link: bool = True) -> str:
    lines = [f"### {note.title}", *(f"> {line}" for line in note.lines)]
    if link and note.link:
        lines.append(f"[{note.link_label}]({note.link})")
    return newline.join(lines)


def _plain(note: Note) -> str:
    return "\n".join([note.title, *note.lines, *([f"{note.link_label}: {note.link}"] if note.link else [])])


def wecom(note: Note, robot: Robot) -> Body:
    """A WeCom message of the robot's kind (a news card without a link goes as markdown)."""
    if robot.message == "text":
        return {"msgtype": "text", "text": {"content": _clip(_plain(note), _WECOM_BYTES["text"]),
                "mentioned_list": robot.mention_userids, "mentioned_mobile_list": robot.mention_mobiles}}  # fmt: skip
    if robot.message == "news" and note.link:
        article = {"title": note.title, "description": "\n".join(note.lines), "url": note.link}
        return {"msgtype": "news", "news": {"articles": [article]}}
    mentions = "".join(f"\n<@{user}>" for user in robot.mention_userids)
    content = _clip(_markdown(note, "\n"), _WECOM_BYTES["markdown"] - len(mentions.encode())) + mentions
    return {"msgtype": "markdown", "markdown": {"content": content}}


def wecom_image(picture: bytes) -> Body | None:
    """A WeCom image message of a JPEG or PNG of at most 2 MB; None for anything else."""
    if len(picture) > IMAGE_MAX_BYTES or not picture.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        return None
    image = {"base64": base64.b64encode(picture).decode(), "md5": hashlib.md5(picture).hexdigest()}
    return {"msgtype": "image", "image": image}


def dingtalk(note: Note, robot: Robot) -> Body:
    """A DingTalk markdown message mentioning the robot's mobiles and user ids, or an actionCard whose button
    opens the alert (an actionCard cannot mention; without a link it goes as markdown)."""
    if robot.message == "actionCard" and note.link:
        card = {"title": note.title, "text": _markdown(note, "\n\n", link=False), "btnOrientation": "0",
                "singleTitle": note.link_label, "singleURL": note.link}  # fmt: skip
        return {"msgtype": "actionCard", "actionCard": card}
    mentions = " ".join(f"@{who}" for who in (*robot.mention_mobiles, *robot.mention_userids))
    text = _markdown(note, "\n\n") + (f"\n\n{mentions}" if mentions else "")
    at = {"atMobiles": robot.mention_mobiles, "atUserIds": robot.mention_userids, "isAtAll": False}
    return {"msgtype": "markdown", "markdown": {"title": note.title, "text": text}, "at": at}


def feishu(note: Note, robot: Robot) -> Body:
    """A Feishu interactive card (a button to the alert when there is a link), post or text message."""
    if robot.message == "text":
        mentions = "".join(f' <at user_id="{user}"></at>' for user in robot.mention_userids)
        return {"msg_type": "text", "content": {"text": _plain(note) + mentions}}
    if robot.message == "post":
        rows: list[list[Body]] = [[{"tag": "text", "text": line}] for line in note.lines]
        if note.link:
            rows.append([{"tag": "a", "text": note.link_label, "href": note.link}])
        if robot.mention_userids:
            rows.append([{"tag": "at", "user_id": user} for user in robot.mention_userids])
        return {"msg_type": "post", "content": {"post": {"zh_cn": {"title": note.title, "content": rows}}}}
    mentions = "".join(f"<at id={user}></at>" for user in robot.mention_userids)
    text = "\n".join(note.lines) + (f"\n{mentions}" if mentions else "")
    elements: list[Body] = [{"tag": "div", "text": {"tag": "lark_md", "content": text}}]
    if note.link:
        button = {"tag": "button", "text": {"tag": "plain_text", "content": note.link_label}, "type": "primary",
                  "url": note.link}  # fmt: skip
        elements.append({"tag": "action", "actions": [button]})
    header = {"title": {"tag": "plain_text", "content": note.title}, "template": _COLOURS[note.severity]}
    return {"msg_type": "interactive", "card": {"config": {"wide_screen_mode": True}, "header": header,
            "elements": elements}}  # fmt: skip


RENDER: dict[str, Callable[[Note, Robot], Body]] = {"wecom": wecom, "dingtalk": dingtalk, "feishu": feishu}


def dingtalk_sign(timestamp_ms: int, secret: str) -> str:
    """DingTalk's ``sign`` query parameter, URL-encoded."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def feishu_sign(timestamp_s: int, secret: str) -> str:
    """Feishu's ``sign`` body field: the key is "{timestamp}\\n{secret}", the message empty."""
    return base64.b64encode(hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()


def signed(robot: Robot, body: Body, now_s: float) -> tuple[str, bytes]:
    """(URL, JSON body) of a message as the robot wants it signed at ``now_s`` (unsigned without a secret)."""
    url = robot.url
    if robot.secret and robot.format == "dingtalk":
        timestamp_ms = int(now_s * 1000)
        url += f"{'&' if '?' in url else '?'}timestamp={timestamp_ms}&sign={dingtalk_sign(timestamp_ms, robot.secret)}"
    elif robot.secret and robot.format == "feishu":
        timestamp_s = int(now_s)
        body = {"timestamp": str(timestamp_s), "sign": feishu_sign(timestamp_s, robot.secret), **body}
    return url, json.dumps(body, ensure_ascii=False).encode()


def robot_error(format_: str, answer: bytes) -> str | None:
    """Why a robot refused a message its HTTP 200 answer carries (code and message), or None when it took it."""
    try:
        parsed = json.loads(answer)
        code, message = (
            (parsed.get("code", parsed.get("StatusCode")), parsed.get("msg", parsed.get("StatusMessage")))
            if format_ == "feishu"
            else (parsed.get("errcode"), parsed.get("errmsg"))
        )
    except (ValueError, AttributeError):
        return f"not a {format_} robot's answer: {answer[:100]!r}"
    if code == 0:
        return None
    return f"{'code' if format_ == 'feishu' else 'errcode'} {code}: {message}"


def _name(robot: Robot) -> str:
    """How the logs name a robot: its URL holds its key."""
    return f"{robot.format} robot {robot.id}"


def plan(needs: list[int], room: int, held: bool = False) -> tuple[int, bool]:
    """How many deliveries, oldest first, go as messages of their own (each needing ``needs[i]`` messages),
    and whether the rest go folded into one summary, when the robot may take ``room`` messages now. Once the
    limit has held some back (``held``), everything waiting goes in one summary as soon as there is room."""
    if room <= 0:
        return 0, False
    if held:
        return 0, True
    if sum(needs) <= room:
        return len(needs), False
    budget, alone = room - 1, 0
    while alone < len(needs) and needs[alone] <= budget:
        budget -= needs[alone]
        alone += 1
    return alone, True


class RobotCourier:
    """Sends the robots' due deliveries within their limits; the dispatcher records each outcome."""

    def __init__(self, send: Send, public_url: str, lease_s: float, claim_limit: int = 1000) -> None:
        self.send = send
        self.public_url = public_url.rstrip("/")
        self.lease_s = lease_s
        self.claim_limit = claim_limit

    def run(self, conn: psycopg.Connection, record: Record) -> int:
        """Claims and sends each robot's due deliveries; returns how many it claimed."""
        claimed_total, lease = 0, timedelta(seconds=self.lease_s)
        for robot in registry.due_robots(conn):
            claimed = registry.claim_robot_deliveries(conn, robot.id, lease, self.claim_limit)
            if claimed:
                self._deliver(conn, robot, claimed, record)
                claimed_total += len(claimed)
        return claimed_total

    def _messages(self, robot: Robot, delivery: RobotDelivery, alert: StoredAlert, picture: bytes | None) -> list[Body]:
        mobiles = robot.mention_mobiles + [m for m in delivery.mention_mobiles if m not in robot.mention_mobiles]
        note = alert_note(alert, delivery.change, self.public_url)
        messages = [RENDER[robot.format](note, robot._replace(mention_mobiles=mobiles))]
        image = wecom_image(picture) if picture is not None else None
        return messages + ([image] if image is not None else [])

    def _deliver(self, conn: psycopg.Connection, robot: Robot, claimed: list[RobotDelivery], record: Record) -> None:
        alerts = registry.alerts_by_id(conn, [d.alert_id for d in claimed])
        for gone in (d for d in claimed if d.alert_id not in alerts):  # dropped by retention meanwhile
            record(conn, Outcome(gone.id, gone.attempts, _name(robot), None, "the alert is no longer stored"))
        live = [d for d in claimed if d.alert_id in alerts]
        raised = [d.alert_id for d in live if d.change == "raised"]
        pictures = registry.newest_snapshots(conn, raised) if robot.format == "wecom" and raised else {}
        messages = {d.id: self._messages(robot, d, alerts[d.alert_id], pictures.get(d.alert_id)) for d in live}
        needs = [max(0, len(messages[d.id]) - d.parts_sent) for d in live]
        with conn.transaction():
            room, free_at = registry.robot_room(conn, robot.id)
            alone, fold = plan(needs, room, held=any(d.held for d in live))
            sends = registry.reserve_sends(conn, robot.id, sum(needs[:alone]) + int(fold), self.lease_s)
        slots = iter(sends)
        if not fold and alone < len(live):
            # A little past the moment the oldest message may leave the window, so that it has; the same
            # moment for every delivery held, so that they go in one summary.
            registry.hold(conn, [d.id for d in live[alone:]], free_at + timedelta(seconds=0.05))
        for delivery in live[:alone]:
            status, error = self._send_parts(conn, robot, delivery, messages[delivery.id], slots)
            record(conn, Outcome(delivery.id, delivery.attempts, _name(robot), status, error))
        if fold:
            folded = live[alone:]
            note = summary_note([(alerts[d.alert_id], d.change) for d in folded], self.public_url)
            status, error = self._send_one(conn, robot, RENDER[robot.format](note, robot), next(slots))
            for delivery in folded:
                record(conn, Outcome(delivery.id, delivery.attempts, _name(robot), status, error, folded=True))
        registry.release_sends(conn, list(slots))

    def _send_parts(
        self,
        conn: psycopg.Connection,
        robot: Robot,
        delivery: RobotDelivery,
        messages: list[Body],
        slots: Iterator[int],
    ) -> tuple[int | None, str | None]:
        """Sends the messages of a delivery the robot has not taken yet, stopping at the first it refuses."""
        status: int | None = None
        for sent in range(delivery.parts_sent, len(messages)):
            status, error = self._send_one(conn, robot, messages[sent], next(slots))
            if error is not None:
                return status, error
            if sent + 1 < len(messages):
                registry.record_part(conn, delivery.id, sent + 1)
        return status, None

    def _send_one(self, conn: psycopg.Connection, robot: Robot, body: Body, slot: int) -> tuple[int | None, str | None]:
        url, payload = signed(robot, body, time.time())
        try:
            return self.send(url, payload, lambda answer: robot_error(robot.format, answer))
        finally:
            registry.answered(conn, slot)
