"""A stand-in for the chat-group robots' servers (WeCom, DingTalk, Feishu) on 127.0.0.1, for the tests and the demo.

Robots are added by their key (WeCom), access token (DingTalk) or hook token (Feishu), with a signing secret
where the robot has one, and each gets the URL its real server would give, on this host. Every POST is
recorded (``received``) with the answer it got, which is what the real servers answer: HTTP 200 and a code
in the body (``errcode``/``errmsg``; Feishu ``code``/``msg``), 0 when the message is taken.

What is checked, in this order:

- the robot exists: WeCom 93000, DingTalk 300001, Feishu 19001;
- DingTalk blocks a robot that went over its limit for 10 minutes (``block_s``): 130101 meanwhile;
- the signature, whose timestamp is within an hour: DingTalk ``timestamp`` (ms) and ``sign`` query parameters,
  310000; Feishu ``timestamp`` (s) and ``sign`` in the body, 19021;
- the limit, ``per_minute`` messages in any ``window_s`` seconds (20 in 60 unless told): every POST that got
  this far counts, taken or not; WeCom 45009, DingTalk 130101 (and the block starts), Feishu 11232;
- the message: a JSON object of a known type with its fields (WeCom 40008, DingTalk 40035, Feishu 9499);
  WeCom contents within 2048 (text) and 4096 (markdown) bytes (40058) and an image whose md5 is that of
  its decoded bytes (40035), at most 2 MB (40009).

Example:
    >>> message_refusal("wecom", {"msgtype": "markdown", "markdown": {"content": "火警"}}) is None
    True
    >>> message_refusal("dingtalk", {"msgtype": "markdown"}), message_refusal("wecom", {"msgtype": "text",
    ...     "text": {"content": "x" * 2049}})
    ((40035, 'invalid message type or missing msgtype content'), (40058, 'text.content exceed max length 2048'))

Run on its own for the demo (it logs what it receives):

    python -m deploy.local.robots --port 8089 --wecom k1 --dingtalk t1:SECret --feishu h1:secret
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, unquote_plus, urlsplit

log = logging.getLogger(__name__)

PER_MINUTE = 20
WINDOW_S = 60.0
DINGTALK_BLOCK_S = 600.0
SIGN_WINDOW_S = 3600.0
IMAGE_MAX_BYTES = 2 * 1024 * 1024
WECOM_LIMITS = {"text": 2048, "markdown": 4096}

_UNKNOWN = {"wecom": (93000, "invalid webhook url"), "dingtalk": (300001, "token is not exist"),
            "feishu": (19001, "param invalid: incoming webhook access token invalid")}  # fmt: skip
_TOO_FAST = {"wecom": (45009, "api freq out of limit"),
             "dingtalk": (130101, "send too fast, exceed 20 times per minute"),
             "feishu": (11232, "frequency limited")}  # fmt: skip
_BAD_SIGN = {"dingtalk": (310000, "sign not match"),
             "feishu": (19021, "sign match fail or timestamp is not within one hour from current time")}  # fmt: skip
_FIELDS = {
    "wecom": ("msgtype", 40008, {"text": "text", "markdown": "markdown", "image": "image", "news": "news"}),
    "dingtalk": ("msgtype", 40035, {"text": "text", "markdown": "markdown", "actionCard": "actionCard",
                                    "link": "link", "feedCard": "feedCard"}),
    "feishu": ("msg_type", 9499, {"text": "content", "post": "content", "image": "content", "interactive": "card"}),
}  # fmt: skip
"""Per format: the message type's field, the code for a bad message, and each type's field that must be there."""


@dataclass
class RobotAccount:
    """One robot of the stand-in, and what it has counted."""

    format: str
    token: str
    secret: str = ""
    per_minute: int = PER_MINUTE
    window_s: float = WINDOW_S
    block_s: float = DINGTALK_BLOCK_S
    arrivals: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


@dataclass(frozen=True)
class Received:
    """A POST to a robot and the answer it got."""

    format: str
    token: str
    at: float
    query: dict[str, str]
    body: Any
    code: int
    message: str

    @property
    def accepted(self) -> bool:
        return self.code == 0


def _dingtalk_sign(timestamp: str, secret: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()


def _feishu_sign(timestamp: str, secret: str) -> str:
    return base64.b64encode(hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()


def _fresh(timestamp: str, divisor: float, now: float) -> bool:
    try:
        return abs(int(timestamp) / divisor - now) <= SIGN_WINDOW_S
    except ValueError:
        return False


def signature_refusal(robot: RobotAccount, query: dict[str, str], body: Any, now: float) -> bool:
    """Whether a signed robot's message lacks a good, fresh signature."""
    if not robot.secret or robot.format == "wecom":
        return False
    if robot.format == "dingtalk":
        stamp, sign = query.get("timestamp", ""), query.get("sign", "")
        return not (_fresh(stamp, 1000, now) and hmac.compare_digest(sign, _dingtalk_sign(stamp, robot.secret)))
    stamp = str(body.get("timestamp", "")) if isinstance(body, dict) else ""
    sign = str(body.get("sign", "")) if isinstance(body, dict) else ""
    return not (_fresh(stamp, 1, now) and hmac.compare_digest(sign, _feishu_sign(stamp, robot.secret)))


def message_refusal(format_: str, body: Any) -> tuple[int, str] | None:
    """(code, message) when the body is not a message the robot takes, else None."""
    type_field, code, needs = _FIELDS[format_]
    kind = body.get(type_field) if isinstance(body, dict) else None
    if kind not in needs or not isinstance(body.get(needs[kind]), dict):
        return code, f"invalid message type or missing {type_field} content"
    if format_ != "wecom":
        return None
    content = body[kind]
    if kind in WECOM_LIMITS and len(str(content.get("content", "")).encode()) > WECOM_LIMITS[kind]:
        return 40058, f"{kind}.content exceed max length {WECOM_LIMITS[kind]}"
    if kind == "image":
        try:
            picture = base64.b64decode(str(content.get("base64", "")), validate=True)
        except binascii.Error:
            return 40035, "invalid parameter: image.base64"
        if len(picture) > IMAGE_MAX_BYTES:
            return 40009, "invalid image size"
        if hashlib.md5(picture).hexdigest() != content.get("md5"):
            return 40035, "invalid parameter: image.md5 does not match"
    return None


class RobotStandIn:
    """The stand-in server, in a thread; a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.robots: dict[tuple[str, str], RobotAccount] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = stand_in.handle(self.path, raw)
                if answer is None:
                    self.send_error(404)
                    return
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(
        self,
        format_: str,
        token: str,
        secret: str = "",
        per_minute: int = PER_MINUTE,
        window_s: float = WINDOW_S,
        block_s: float = DINGTALK_BLOCK_S,
    ) -> str:
        """Adds a robot; returns the URL to send to it."""
        self.robots[(format_, token)] = RobotAccount(format_, token, secret, per_minute, window_s, block_s)
        return {
            "wecom": f"{self.url}/cgi-bin/webhook/send?key={token}",
            "dingtalk": f"{self.url}/robot/send?access_token={token}",
            "feishu": f"{self.url}/open-apis/bot/v2/hook/{token}",
        }[format_]

    def messages(self, token: str, accepted: bool = True) -> list[Received]:
        """What a robot received (only what it took, unless ``accepted`` is False), oldest first."""
        with self._lock:
            return [r for r in self.received if r.token == token and (r.accepted or not accepted)]

    def handle(self, path: str, raw: bytes) -> dict[str, Any] | None:
        """The answer to a POST to ``path``; None when the path is no robot's."""
        parts = urlsplit(path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if parts.path == "/cgi-bin/webhook/send":
            format_, token = "wecom", query.get("key", "")
        elif parts.path == "/robot/send":
            format_, token = "dingtalk", query.get("access_token", "")
        elif parts.path.startswith("/open-apis/bot/v2/hook/"):
            format_, token = "feishu", parts.path.rsplit("/", 1)[-1]
        else:
            return None
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            code, message = self._check(format_, token, query, body, time.time())
            self.received.append(Received(format_, token, time.time(), query, body, code, message))
        if code:
            log.info("%s robot %s refused a message: %d %s", format_, token, code, message)
        else:
            log.info("%s robot %s: %s", format_, token, json.dumps(body, ensure_ascii=False)[:300])
        if format_ == "feishu":
            return {"code": code, "msg": message or "success", "data": {}}
        return {"errcode": code, "errmsg": message or "ok"}

    def _check(self, format_: str, token: str, query: dict[str, str], body: Any, now: float) -> tuple[int, str]:
        robot = self.robots.get((format_, token))
        if robot is None:
            return _UNKNOWN[format_]
        if now < robot.blocked_until:
            return _TOO_FAST[format_]
        if signature_refusal(robot, query, body, now):
            return _BAD_SIGN[format_]
        while robot.arrivals and robot.arrivals[0] <= now - robot.window_s:
            robot.arrivals.popleft()
        robot.arrivals.append(now)
        if len(robot.arrivals) > robot.per_minute:
            if format_ == "dingtalk":
                robot.blocked_until = now + robot.block_s
            return _TOO_FAST[format_]
        return message_refusal(format_, body) or (0, "")


def _token_secret(value: str) -> tuple[str, str]:
    token, _, secret = value.partition(":")
    return token, unquote_plus(secret)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stand-in WeCom, DingTalk and Feishu robot servers on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--wecom", action="append", default=[], metavar="KEY")
    parser.add_argument("--dingtalk", action="append", default=[], metavar="TOKEN[:SECRET]")
    parser.add_argument("--feishu", action="append", default=[], metavar="TOKEN[:SECRET]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with RobotStandIn(args.port) as stand_in:
        for key in args.wecom:
            print(stand_in.add("wecom", key), flush=True)
        for format_ in ("dingtalk", "feishu"):
            for value in getattr(args, format_):
                print(stand_in.add(format_, *_token_secret(value)), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
