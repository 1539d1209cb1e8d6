"""Chat-group robots on a real database and the stand-in robot servers (deploy/local/robots.py): the exact
WeCom, DingTalk and Feishu bodies and signatures, the robots' error codes as failed deliveries, and the
limiter: a burst of alarms never takes a robot over its limit, and what does not fit is folded into summaries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from api_helpers import EAST, JPEG, get, raise_alert
from conftest import ApiServer, eventually

from alerts.core.models import Alert, Event, EventKind, Severity
from alerts.core.policy import AlertPolicy
from alerts.notify.webhooks import WebhookDispatcher
from alerts.store import webhook_registry
from alerts.store.database import WriteBatch, write_batch
from deploy.local.robots import RobotStandIn

PUBLIC = "https://alerts.example"
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def robots_api(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The API with loopback allowed as a target (the stand-in listens there) and a public address for links."""
    monkeypatch.setenv("PATROLNET_WEBHOOK_ALLOW", "127.0.0.1")
    monkeypatch.setenv("PATROLNET_PUBLIC_URL", PUBLIC)
    with ApiServer(database_url) as server:
        yield server


@pytest.fixture
def stand_in() -> Iterator[RobotStandIn]:
    with RobotStandIn() as server:
        yield server


def register(api: ApiServer, **hook: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{api.url}/api/v1/webhooks", headers=api.key("admin"), json={"role": "fire", "community": "east-gate", **hook}
    )
    assert response.status_code == 201, response.text
    return response.json()


def dispatching(database_url: str, name: str = "robots-1") -> WebhookDispatcher:
    dispatcher = WebhookDispatcher(
        database_url, name=name, public_url=PUBLIC, poll_s=0.05, base_backoff_s=0.2, allow="127.0.0.1"
    )
    dispatcher.start()
    return dispatcher


def test_wecom_dingtalk_and_feishu_messages_and_signatures(robots_api: ApiServer, stand_in: RobotStandIn) -> None:
    api = robots_api
    urls = {
        "wk-md": stand_in.add("wecom", "wk-md"),
        "wk-text": stand_in.add("wecom", "wk-text"),
        "wk-news": stand_in.add("wecom", "wk-news"),
        "dt-md": stand_in.add("dingtalk", "dt-md", secret="SECding"),
        "dt-card": stand_in.add("dingtalk", "dt-card", secret="SECding"),
        "fs-card": stand_in.add("feishu", "fs-card", secret="fs-secret"),
        "fs-post": stand_in.add("feishu", "fs-post", secret="fs-secret"),
        "fs-text": stand_in.add("feishu", "fs-text"),
    }
    register(api, url=urls["wk-md"], format="wecom", mention_userids=["zhangsan"])
    register(api, url=urls["wk-text"], format="wecom", message="text", mention_userids=["zhangsan"],
             mention_mobiles=["13800000000"])  # fmt: skip
    register(api, url=urls["wk-news"], format="wecom", message="news")
    register(api, url=urls["dt-md"], format="dingtalk", secret="SECding", mention_mobiles=["13800000000"])
    register(api, url=urls["dt-card"], format="dingtalk", secret="SECding", message="actionCard")
    register(api, url=urls["fs-card"], format="feishu", secret="fs-secret", mention_userids=["ou_abc"])
    register(api, url=urls["fs-post"], format="feishu", secret="fs-secret", message="post", mention_userids=["ou_abc"])
    register(api, url=urls["fs-text"], format="feishu", message="text", mention_userids=["ou_abc"])
    _, alert = raise_alert(
        api.database_url, ts=T0, snapshot=JPEG, type="smoke", severity=Severity.CRITICAL, title="Smoke alarm"
    )
    raise_alert(api.database_url, kind=EventKind.SECURITY, place=EAST.with_device("cam-9"))  # not the robots' kind
    dispatcher = dispatching(api.database_url)
    try:
        eventually(lambda: len(stand_in.received) >= 11)
    finally:
        dispatcher.stop()
    assert all(r.accepted for r in stand_in.received), [(r.token, r.code, r.message) for r in stand_in.received]
    assert len(stand_in.received) == 11  # 8 messages and a picture after each WeCom one

    link = f"{PUBLIC}/#open={alert.id}"
    title = "火警 Fire alarm: 烟雾 smoke — willow-court"
    lines = [
        "状态 Change: 新告警 raised",
        "级别 Severity: 紧急 critical",
        "地点 Place: riverside / east-gate / g07 / willow-court / smoke-1",
        "时间 Time: 2024-05-01 08:00:00 UTC",
        "详情 Detail: Smoke alarm",
    ]
    quoted = [f"> {line}" for line in lines]
    image = {
        "msgtype": "image",
        "image": {"base64": base64.b64encode(JPEG).decode(), "md5": hashlib.md5(JPEG).hexdigest()},
    }

    def bodies(token: str) -> list[Any]:
        return [r.body for r in stand_in.messages(token)]

    markdown = "\n".join([f"### {title}", *quoted, f"[查看告警 Open the alert]({link})", "<@zhangsan>"])
    assert bodies("wk-md") == [{"msgtype": "markdown", "markdown": {"content": markdown}}, image]
    text = "\n".join([title, *lines, f"查看告警 Open the alert: {link}"])
    assert bodies("wk-text") == [
        {"msgtype": "text", "text": {"content": text, "mentioned_list": ["zhangsan"],
                                     "mentioned_mobile_list": ["13800000000"]}},
        image,
    ]  # fmt: skip
    news = {"title": title, "description": "\n".join(lines), "url": link}
    assert bodies("wk-news") == [{"msgtype": "news", "news": {"articles": [news]}}, image]

    for token in ("dt-md", "dt-card"):
        [received] = stand_in.messages(token)
        stamp = received.query["timestamp"]
        assert abs(int(stamp) / 1000 - received.at) < 5
        digest = hmac.new(b"SECding", f"{stamp}\nSECding".encode(), hashlib.sha256).digest()
        assert received.query["sign"] == base64.b64encode(digest).decode()
    dt_text = "\n\n".join([f"### {title}", *quoted, f"[查看告警 Open the alert]({link})", "@13800000000"])
    assert bodies("dt-md") == [
        {"msgtype": "markdown", "markdown": {"title": title, "text": dt_text},
         "at": {"atMobiles": ["13800000000"], "atUserIds": [], "isAtAll": False}}
    ]  # fmt: skip
    card = {"title": title, "text": "\n\n".join([f"### {title}", *quoted]), "btnOrientation": "0",
            "singleTitle": "查看告警 Open the alert", "singleURL": link}  # fmt: skip
    assert bodies("dt-card") == [{"msgtype": "actionCard", "actionCard": card}]

    signed = {}
    for token in ("fs-card", "fs-post"):
        [body] = bodies(token)
        stamp, sign = body.pop("timestamp"), body.pop("sign")
        assert abs(int(stamp) - time.time()) < 60
        assert sign == base64.b64encode(hmac.new(f"{stamp}\nfs-secret".encode(), b"", hashlib.sha256).digest()).decode()
        signed[token] = body
    button = {"tag": "button", "text": {"tag": "plain_text", "content": "查看告警 Open the alert"}, "type": "primary",
              "url": link}  # fmt: skip
    assert signed["fs-card"] == {
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": True},
            "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(lines) + "\n<at id=ou_abc></at>"}},
                {"tag": "action", "actions": [button]},
            ],
        },
    }
    rows = [[{"tag": "text", "text": line}] for line in lines]
    rows += [[{"tag": "a", "text": "查看告警 Open the alert", "href": link}], [{"tag": "at", "user_id": "ou_abc"}]]
    assert signed["fs-post"] == {"msg_type": "post", "content": {"post": {"zh_cn": {"title": title, "content": rows}}}}
    assert bodies("fs-text") == [{"msg_type": "text", "content": {"text": text + ' <at user_id="ou_abc"></at>'}}]


def test_a_robots_error_code_is_a_failed_delivery_retried_and_logged(
    robots_api: ApiServer, stand_in: RobotStandIn
) -> None:
    api = robots_api
    ding = register(api, url=stand_in.add("dingtalk", "dt", secret="right"), format="dingtalk", secret="wrong")
    fei = register(api, url=stand_in.add("feishu", "fs", secret="right"), format="feishu", secret="wrong")
    raise_alert(api.database_url)
    dispatcher = dispatching(api.database_url)
    try:
        eventually(lambda: min(len(stand_in.messages(token, accepted=False)) for token in ("dt", "fs")) >= 2)
    finally:
        dispatcher.stop()
    assert [r.code for r in stand_in.received if r.accepted] == []
    admin = api.key("admin")
    feishu_error = "code 19021: sign match fail or timestamp is not within one hour from current time"
    for hook, error in ((ding, "errcode 310000: sign not match"), (fei, feishu_error)):
        [delivery] = get(api, f"/api/v1/webhooks/{hook['id']}/deliveries", admin).json()
        assert (delivery["state"], delivery["last_status"], delivery["last_error"]) == ("pending", 200, error)
        assert delivery["attempts"] >= 2


def test_a_retry_sends_only_the_messages_the_robot_did_not_take(robots_api: ApiServer, stand_in: RobotStandIn) -> None:
    """A WeCom alert is its text, then its picture: when the picture is refused, the retry sends the picture only."""
    api = robots_api
    url = stand_in.add("wecom", "pic", per_minute=1, window_s=0.5)  # tighter than the robot registered says
    hook = register(api, url=url, format="wecom")
    raise_alert(api.database_url, snapshot=JPEG)
    dispatcher = dispatching(api.database_url)
    try:
        eventually(lambda: any(r.accepted and r.body["msgtype"] == "image" for r in stand_in.received))
    finally:
        dispatcher.stop()
    sent = [(r.body["msgtype"], r.code) for r in stand_in.received]
    assert sent[:2] == [("markdown", 0), ("image", 45009)]
    assert sent[-1] == ("image", 0) and [kind for kind, _ in sent].count("markdown") == 1, sent
    [delivery] = get(api, f"/api/v1/webhooks/{hook['id']}/deliveries", api.key("admin")).json()
    assert (delivery["state"], delivery["attempts"], delivery["folded"]) == ("delivered", len(sent) - 1, False)


def raise_in_batches(database_url: str, count: int, per_batch: int) -> list[Alert]:
    """``count`` fire alarms (smoke and heat, each a device of its own) stored as ingest stores them, a few a batch."""
    policy = AlertPolicy()
    events = [
        Event(kind=EventKind.FIRE, type=("smoke", "heat")[i % 2], place=EAST.with_device(f"smoke-{i}"), source="n1")
        for i in range(count)
    ]
    alerts = [alert for event in events if (alert := policy.apply(event)) is not None]
    with psycopg.connect(database_url, autocommit=True) as conn:
        for i in range(0, count, per_batch):
            with conn.transaction():
                write_batch(conn, WriteBatch(events=events[i : i + per_batch], alerts=alerts[i : i + per_batch]))
    return alerts


def test_sixty_alarms_in_a_window_never_exceed_the_limit_and_are_all_accounted_for(
    robots_api: ApiServer, stand_in: RobotStandIn
) -> None:
    api = robots_api
    window_s = 3.0
    url = stand_in.add("dingtalk", "burst", secret="SECburst", window_s=window_s)
    hook = register(api, url=url, format="dingtalk", secret="SECburst", window_s=window_s)
    assert (hook["per_minute"], hook["window_s"]) == (20, window_s)
    dispatchers = [dispatching(api.database_url, f"robots-{i}") for i in range(2)]  # one limit, shared
    try:
        started = time.time()
        alerts = raise_in_batches(api.database_url, 60, per_batch=5)
        raised_s = time.time() - started
        with psycopg.connect(api.database_url, autocommit=True) as conn:
            delivered = "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
            eventually(lambda: conn.execute(delivered).fetchone() == (60,), timeout=30)
            rows = conn.execute("SELECT alert_id, folded FROM webhook_deliveries").fetchall()
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop()
    assert raised_s < window_s, f"the alarms are raised within one window, not {raised_s:.1f} s"
    received = stand_in.messages("burst", accepted=False)
    assert all(r.accepted for r in received), [(r.code, r.message) for r in received]
    arrivals = sorted(r.at for r in received)
    busiest = max(sum(1 for t in arrivals if a - window_s < t <= a) for a in arrivals)
    assert busiest <= 20
    texts = [r.body["markdown"]["text"] for r in received]
    alone = [m.group(1) for text in texts if (m := re.search(r"#open=([0-9a-f-]{36})", text))]
    summaries = [int(m.group(1)) for text in texts if (m := re.search(r"另有 (\d+) 条告警 \1 more alerts", text))]
    assert len(alone) + len(summaries) == len(received)
    assert len(alone) <= 20 and summaries, (len(alone), summaries)
    assert len(set(alone)) == len(alone)
    assert len(alone) + sum(summaries) == 60
    assert {str(a) for a, folded in rows if not folded} == set(alone)
    assert sum(folded for _, folded in rows) == sum(summaries)
    assert {str(a.id) for a in alerts} == {str(a) for a, _ in rows}
    summary = next(text for text in texts if "more alerts" in text)
    assert re.search(r"\d+ × 火警 Fire alarm 烟雾 smoke, 新告警 raised: willow-court ×\d+", summary), summary


def test_the_default_limit_is_20_in_60_seconds(robots_api: ApiServer, stand_in: RobotStandIn) -> None:
    api = robots_api
    hook = register(api, url=stand_in.add("wecom", "k"), format="wecom")
    assert (hook["per_minute"], hook["window_s"]) == (20, 60.0)
    robot = UUID(hook["id"])
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        with conn.transaction():
            assert webhook_registry.robot_room(conn, robot)[0] == 20
            sends = webhook_registry.reserve_sends(conn, robot, 20, lease_s=30)
        with conn.transaction():
            room, free_at = webhook_registry.robot_room(conn, robot)
        assert room == 0 and 59 < (free_at - datetime.now(UTC)).total_seconds() <= 60  # in flight: counted
        for send in sends:
            webhook_registry.answered(conn, send)
        with conn.transaction():
            room, free_at = webhook_registry.robot_room(conn, robot)
        assert room == 0 and 59 < (free_at - datetime.now(UTC)).total_seconds() <= 60

    # The stand-in's robots count as the real ones: 20 in 60 s, and DingTalk then blocks for 10 minutes.
    url = stand_in.add("dingtalk", "d")
    answers = [httpx.post(url, json={"msgtype": "text", "text": {"content": "hi"}}).json() for _ in range(21)]
    assert [a["errcode"] for a in answers] == [0] * 20 + [130101]
    robot_account = stand_in.robots[("dingtalk", "d")]
    assert (robot_account.per_minute, robot_account.window_s, robot_account.block_s) == (20, 60.0, 600.0)


def test_dingtalk_blocks_a_robot_that_went_over_and_wecom_does_not(stand_in: RobotStandIn) -> None:
    message = {"msgtype": "text", "text": {"content": "hi"}}
    with httpx.Client() as client:
        for format_, too_fast in (("dingtalk", 130101), ("wecom", 45009)):
            url = stand_in.add(format_, "quick", per_minute=1, window_s=1.0)
            codes = [client.post(url, json=message).json()["errcode"] for _ in range(2)]
            time.sleep(1.2)
            codes.append(client.post(url, json=message).json()["errcode"])
            assert codes == [0, too_fast, too_fast if format_ == "dingtalk" else 0], format_


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        ({"format": "wecom", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"}, "carries its key"),
        ({"format": "wecom", "url": "https://q.example/s?key=k", "secret": "s"}, "not signed"),
        ({"format": "wecom", "url": "https://q.example/s?key=k", "mention_mobiles": ["13800000000"]}, "text"),
        ({"format": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/"}, "hook token"),
        ({"format": "feishu", "url": "https://f.example/hook/t", "mention_mobiles": ["13800000000"]}, "user id"),
        ({"format": "dingtalk", "url": "https://d.example/robot/send?access_token=t", "message": "news"}, "send"),
        ({"format": "dingtalk", "url": "https://d.example/robot/send?access_token=t", "per_minute": 21}, "20"),
        ({"url": "https://hooks.example/h", "mention_userids": ["u1"]}, "for robots only"),
        ({"format": "wecom", "url": "https://q.example/s?key=k", "message": "news"}, "PATROLNET_PUBLIC_URL"),
    ],
)
def test_robots_that_cannot_work_are_refused(api: ApiServer, hook: dict[str, Any], why: str) -> None:
    response = httpx.post(f"{api.url}/api/v1/webhooks", headers=api.key("admin"), json={"role": "fire", **hook})
    assert response.status_code == 422
    assert why in response.text, response.text
