"""The weekly reminder to the shop on duty, sent to its community's webhooks and chat-group robots.

A community's own webhooks (scoped to the community, not to a grid or site) get it: a ``json`` webhook the body
``{"type": "shop_duty", "week", "community", "shop", "next", "page"}`` (signed as every webhook delivery is, with
``X-Patrolnet-Event: shop_duty``); a robot its kind of message, made, signed and counted against its limit as an
alert's is (``alerts.notify.robots``), mentioning the shop owner's mobile where the robot mentions mobiles
(DingTalk; WeCom text messages). It goes out at once, through the same target checks (``alerts.notify.webhooks``),
not through the alert delivery queue: it is not an alert change. Each try is logged in ``shop_reminders``, and a
hook that has taken the week's reminder is not sent it again, so ``patrolnet shops remind`` run by a timer retries
only what failed.

It names where the shop checks in, its phone page ``<PATROLNET_PUBLIC_URL>/shop``, but without the shop's key:
keys are shown once and stored hashed, and the reminder goes to a group chat, where a key would let anyone in the
group check in as the shop. The key reaches the shop once, in its link from registration (``/shop#<key>``, with a
QR code); the page keeps it on the phone that opened it, so the reminder's plain link opens the shop's page there.

Example:
    >>> shop = Shop(id=UUID(int=1), position=1, opted_out=False, sub_district="s", community="east-gate",
    ...             name="Tea shop", address="3 Elm Row", owner="Wang", phone="13800000000")
    >>> note = reminder_note(Reminder(week=date(2025, 1, 6), shop=shop, next=None), "")
    >>> note.title
    '本周值班商铺 Shop on duty this week: Tea shop'
    >>> note.lines[0]
    '周 Week: 2025-01-06 – 2025-01-12'
    >>> note.lines[-1]
    '签到 Check in: 在店铺手机上打开登记时的签到链接 on the shop phone, with the link given at registration'
    >>> reminder_note(Reminder(week=date(2025, 1, 6), shop=shop, next=None), "https://alerts.example").link
    'https://alerts.example/shop'
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from uuid import UUID

import psycopg
from psycopg import AsyncConnection

from alerts.core.models import Severity
from alerts.notify.robots import RENDER, Note, robot_error, signed
from alerts.notify.webhooks import TargetPolicy, post, sign
from alerts.store import shops, webhook_registry
from alerts.store.people import UNSCOPED
from alerts.store.shops import Shop
from alerts.store.webhook_registry import Robot

log = logging.getLogger(__name__)

_MOBILE = re.compile(r"^\+?[0-9]{5,20}$")
SHOP_PAGE = "/shop"  # the shops' phone page (alerts.api.shop_page)
_WHERE = "签到 Check in: 在店铺手机上打开登记时的签到链接 on the shop phone, with the link given at registration"


@dataclass(frozen=True)
class Reminder:
    """Who is on duty in a week, and who next."""

    week: date
    shop: Shop
    next: Shop | None


@dataclass(frozen=True)
class Sent:
    """How the reminder went to one webhook or robot."""

    webhook_id: UUID
    format: str
    status: int | None
    error: str | None


def reminder_note(reminder: Reminder, public_url: str) -> Note:
    """The robots' message: the shop, where and who, the week, and next week's shop."""
    shop = reminder.shop
    sunday = reminder.week + timedelta(days=6)
    lines = [f"周 Week: {reminder.week} – {sunday}", f"社区 Community: {shop.community}"]
    lines += [f"{label}: {value}" for label, value in (("地址 Address", shop.address), ("店主 Owner", shop.owner),
              ("电话 Phone", shop.phone)) if value]  # fmt: skip
    if reminder.next is not None:
        lines.append(f"下周 Next week: {reminder.next.name}")
    lines.append(_WHERE)
    return Note(
        title=f"本周值班商铺 Shop on duty this week: {shop.name}",
        lines=tuple(lines),
        link=f"{public_url}{SHOP_PAGE}" if public_url else None,
        link_label="签到 Check in",
        severity=Severity.INFO,
    )


def _json_body(reminder: Reminder, public_url: str) -> bytes:
    fields = ("id", "name", "address", "owner", "phone")
    body = {"type": "shop_duty", "week": str(reminder.week), "community": reminder.shop.community,
            "shop": reminder.shop.model_dump(mode="json", include=set(fields)),
            "next": reminder.next.model_dump(mode="json", include=set(fields)) if reminder.next else None,
            "page": f"{public_url}{SHOP_PAGE}"}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def _mentioning(robot: Robot, phone: str) -> Robot:
    """The robot, also mentioning the shop owner's mobile where its messages mention mobiles."""
    mentions = robot.format == "dingtalk" or (robot.format == "wecom" and robot.message == "text")
    if mentions and _MOBILE.match(phone) and phone not in robot.mention_mobiles:
        return robot._replace(mention_mobiles=[*robot.mention_mobiles, phone])
    return robot


class ReminderSender:
    """Sends a week's reminder to the community's hooks that have not taken it yet."""

    def __init__(self, policy: TargetPolicy, public_url: str = "", timeout_s: float = 5.0) -> None:
        self.policy = policy
        self.public_url = public_url.rstrip("/")
        self.timeout_s = timeout_s

    def send(self, conn: psycopg.Connection, reminder: Reminder) -> list[Sent]:
        """Sends and logs each; what was sent, and how it went."""
        sent = []
        for hook in shops.community_hooks(conn, reminder.shop.community, reminder.week):
            status, error = self._robot(conn, hook, reminder) if hook.format != "json" else self._json(hook, reminder)
            shops.record_reminder(conn, reminder.shop, reminder.week, hook.id, status, error)
            if error:
                log.warning("shop reminder to %s webhook %s failed: %s", hook.format, hook.id, error)
            sent.append(Sent(hook.id, hook.format, status, error))
        return sent

    def _json(self, hook: Robot, reminder: Reminder) -> tuple[int | None, str | None]:
        body = _json_body(reminder, self.public_url)
        headers = {"Content-Type": "application/json", "User-Agent": "patrolnet-webhooks",
                   "X-Patrolnet-Event": "shop_duty"}  # fmt: skip
        if hook.secret:
            headers["X-Patrolnet-Signature"] = sign(body, hook.secret)
        return post(hook.url, body, headers, self.policy, self.timeout_s)

    def _robot(self, conn: psycopg.Connection, hook: Robot, reminder: Reminder) -> tuple[int | None, str | None]:
        """One message within the robot's limit, which alerts share: none when the limit has no room now."""
        with conn.transaction():
            room, free_at = webhook_registry.robot_room(conn, hook.id)
            slots = webhook_registry.reserve_sends(conn, hook.id, 1, self.timeout_s + 10) if room > 0 else []
        if not slots:
            return None, f"the robot's limit has no room until {free_at:%H:%M:%S}; sent again at the next run"
        robot = _mentioning(hook, reminder.shop.phone)
        url, body = signed(robot, RENDER[robot.format](reminder_note(reminder, self.public_url), robot), time.time())
        try:
            headers = {"Content-Type": "application/json", "User-Agent": "patrolnet-webhooks"}
            return post(url, body, headers, self.policy, self.timeout_s, lambda a: robot_error(robot.format, a))
        finally:
            webhook_registry.answered(conn, slots[0])


async def due(conninfo: str, community: str | None = None) -> list[Reminder]:
    """This week's reminder of each community with a rotation (or of the one named) that has a shop taking turns."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        reminders = []
        for name in [community] if community else await shops.communities(conn):
            this, following = await shops.duty(conn, UNSCOPED, name, shops.this_week(), 2)
            if this.shop is not None:
                reminders.append(Reminder(week=this.week, shop=this.shop, next=following.shop))
        return reminders


def remind_all(conninfo: str, sender: ReminderSender, reminders: list[Reminder]) -> list[Sent]:
    """Sends each reminder to the hooks of its community that have not taken it yet."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return [sent for reminder in reminders for sent in sender.send(conn, reminder)]
