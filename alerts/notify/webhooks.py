"""Webhooks: alert changes POSTed as JSON to the URLs admins register, with retries and backoff.

A trigger on ``alert_changes`` queues one ``webhook_deliveries`` row per
matching webhook in the same transaction as the change, whoever made it
(ingest, a desk, a citizen report). ``patrolnet webhooks`` runs dispatchers,
as many as wanted: each claims due rows with ``FOR UPDATE SKIP LOCKED`` and
leases them (pushes ``next_at`` ahead) before posting, so no transaction stays
open across a slow remote server and a dispatcher that dies mid-post only
delays a delivery until its lease ends. It runs apart from the API so a slow
receiver never holds API connections, and scales on its own.

Chat-group robots (WeCom, DingTalk, Feishu) are webhooks of another format: the same dispatchers claim
their deliveries, robot by robot, and ``alerts.notify.robots`` makes, signs and limits their messages.

Each POST carries ``X-Patrolnet-Signature: sha256=<hex HMAC of the body>``
when the webhook has a secret. Deliveries of one alert may arrive out of
order after a retry: the body's ``seq`` and ``alert.revision`` order them.

Targets must be public: a URL whose host resolves to a loopback, private,
link-local (169.254.169.254, the cloud metadata service), unspecified,
multicast or reserved address is refused when it is registered and again at
each delivery, after the name is resolved, and the POST goes to the address
that was checked (a name that changes its answer in between gains nothing).
``PATROLNET_WEBHOOK_ALLOW`` (hosts and networks, comma-separated, e.g.
``hooks.internal,10.8.0.0/16``) lets an admin name internal receivers. Redirects
are not followed, and a failure without an HTTP answer is logged as "no HTTP
response" whatever its cause, so the delivery log cannot be used to scan ports.

Example:
    >>> sign(b'{"a": 1}', "s3cret")[:7]
    'sha256='
    >>> policy = TargetPolicy.parse("hooks.internal, 10.8.0.0/16")
    >>> [policy.refusal(u) for u in ("http://2130706433/", "http://[::ffff:169.254.169.254]/", "http://10.8.1.2/")]
    ['127.0.0.1 is not a public address', '::ffff:a9fe:a9fe is not a public address', None]
    >>> backoff(1, base_s=2.0, max_s=600.0), backoff(4, base_s=2.0, max_s=600.0), backoff(20, base_s=2.0, max_s=600.0)
    (2.0, 16.0, 600.0)
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import psycopg

from alerts.core.settings import optional_setting
from alerts.notify.robots import Outcome, RobotCourier
from alerts.store.webhook_registry import ROBOT_PER_MINUTE, alerts_by_id

log = logging.getLogger(__name__)

_CLAIM_SQL = """
UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_at = now() + %(lease)s
FROM webhooks w
WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= now()
               AND webhook_id IN (SELECT id FROM webhooks WHERE format = 'json')
               ORDER BY next_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND w.id = d.webhook_id
RETURNING d.id, d.seq, d.change, d.attempts, d.alert_id, w.url, w.secret"""

_DELIVERED_SQL = (
    "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), last_status = %s, last_error = NULL,"
    " folded = %s WHERE id = %s"
)
_FAILED_SQL = (
    "UPDATE webhook_deliveries SET state = CASE WHEN attempts >= %s THEN 'failed' ELSE 'pending' END,"
    " next_at = now() + %s, last_status = %s, last_error = %s WHERE id = %s"
)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
NO_RESPONSE = "no HTTP response"


def is_public(ip: IPAddress) -> bool:
    """Whether an address is on the public internet, IPv4 inside IPv6 (mapped, 6to4, NAT64) unwrapped."""
    if isinstance(ip, ipaddress.IPv6Address):
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        inner = ip.ipv4_mapped or ip.sixtofour or nat64
        if inner is not None:
            return is_public(inner)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address a host name (or an IP in any form getaddrinfo reads: decimal, octal, hex) stands for."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # A stream socket's address is (host, port, ...) with the host a string; str() says so to the checker.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@dataclass(frozen=True)
class TargetPolicy:
    """Which webhook targets may be reached: public addresses, and the hosts and networks an admin allows."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: str) -> TargetPolicy:
        """From ``PATROLNET_WEBHOOK_ALLOW``'s form: host names and networks (CIDR or one address), comma-separated."""
        hosts, networks = set(), []
        for item in filter(None, (part.strip() for part in allow.split(","))):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls) -> TargetPolicy:
        return cls.parse(optional_setting("PATROLNET_WEBHOOK_ALLOW") or "")

    def _allowed(self, ip: IPAddress) -> bool:
        return is_public(ip) or any(ip.version == n.version and ip in n for n in self.networks)

    def addresses(self, url: str) -> list[IPAddress]:
        """The addresses to POST ``url`` to; ValueError saying why when the target is refused."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        try:
            found = resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
        except (OSError, UnicodeError, ValueError) as exc:
            raise ValueError(f"{host!r} does not resolve") from exc
        if host.lower() in self.hosts:
            return found
        for ip in found:
            if not self._allowed(ip):
                raise ValueError(f"{ip} is not a public address")
        return found

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be a webhook target, or None when it may."""
        try:
            self.addresses(url)
        except ValueError as exc:
            return str(exc)
        return None


class _Pinned:
    """Makes an http.client connection connect to an address already checked, not resolve its host again;
    TLS still checks the certificate against the host name."""

    def __init__(self, ip: IPAddress) -> None:
        self.ip = ip

    def __call__(self, address: tuple[str, int], timeout: float, source: object = None) -> socket.socket:
        return socket.create_connection((str(self.ip), address[1]), timeout)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: TargetPolicy,
    timeout_s: float,
    answer: Callable[[bytes], str | None] | None = None,
) -> tuple[int | None, str | None]:
    """POSTs to a permitted target without following redirects: (HTTP status, None) on a 2xx, else
    (status or None, why); the why never tells one network failure from another. ``answer`` reads a 2xx
    answer's body (its first 64 KiB) and says why it is a refusal, if it is one."""
    parts = urlsplit(url)
    try:
        ip = policy.addresses(url)[0]
    except ValueError as exc:
        return None, f"target refused: {exc}"
    if parts.hostname is None:  # addresses() refuses these already; this tells the type checker
        return None, "target refused: no host"
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout_s)
    conn._create_connection = _Pinned(ip)  # type: ignore[attr-defined]  # http.client's documented-in-code hook
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), body, headers)
        with conn.getresponse() as response:
            status = response.status
            content = response.read(65536) if answer is not None and 200 <= status < 300 else b""
    except (OSError, http.client.HTTPException) as exc:
        log.info("POST to %s: %s", url, exc)
        return None, NO_RESPONSE
    finally:
        conn.close()
    if 200 <= status < 300:
        return status, answer(content) if answer is not None else None
    if 300 <= status < 400:
        return status, f"HTTP {status}: redirects are not followed"
    return status, f"HTTP {status}"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after the ``attempt``-th failure: doubling from ``base_s``, at most ``max_s``."""
    return min(max_s, base_s * 2 ** min(attempt - 1, 30))


class WebhookDispatcher:
    """Delivers due webhook rows until stopped; ``run_once`` delivers one claim's worth."""

    def __init__(
        self,
        database_url: str,
        name: str = "webhooks-1",
        public_url: str = "",
        batch: int = 20,
        poll_s: float = 0.5,
        timeout_s: float = 5.0,
        base_backoff_s: float = 2.0,
        max_backoff_s: float = 600.0,
        max_attempts: int = 10,
        allow: str | None = None,
    ) -> None:
        self.database_url = database_url
        self.name = name
        self.public_url = public_url.rstrip("/")
        self.batch = batch
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self.policy = TargetPolicy.from_env() if allow is None else TargetPolicy.parse(allow)
        self.counts: Counter[str] = Counter()
        # A robot's deliveries are leased for a whole window's messages, each of which may take the timeout.
        self.robots = RobotCourier(self._safe_post, self.public_url, timeout_s * (ROBOT_PER_MINUTE + 2) + 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once() == 0:
                    self._stop.wait(self.poll_s)
            except psycopg.OperationalError as exc:
                log.warning("%s: database away, retrying: %s", self.name, exc)
                self._stop.wait(1.0)
            except Exception:
                # Whatever one claim did, the next is still delivered.
                log.exception("%s: a claim failed; going on", self.name)
                self.counts["errors"] += 1
                self._stop.wait(1.0)

    def run_once(self) -> int:
        """Claims due deliveries (the robots', robot by robot), posts them, records the outcome; returns how
        many it claimed."""
        lease = timedelta(seconds=self.timeout_s * 2 + 10)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            claimed = conn.execute(_CLAIM_SQL, {"lease": lease, "limit": self.batch}).fetchall()
            alerts = alerts_by_id(conn, [c[4] for c in claimed]) if claimed else {}
            for delivery_id, seq, change, attempts, alert_id, url, secret in claimed:
                alert = alerts.get(alert_id)
                error: str | None
                if alert is None:  # dropped by retention meanwhile
                    status, error = None, "the alert is no longer stored"
                else:
                    body = json.dumps(
                        {"delivery": delivery_id, "seq": seq, "change": change, "alert": alert.model_dump(mode="json"),
                         "cap_url": f"{self.public_url}/api/v1/alerts/{alert_id}/cap" if self.public_url else None},
                    ).encode()  # fmt: skip
                    status, error = self._post(url, body, secret, change, delivery_id)
                self._record(conn, Outcome(delivery_id, attempts, url, status, error))
            return len(claimed) + self.robots.run(conn, self._record)

    def _record(self, conn: psycopg.Connection, outcome: Outcome) -> None:
        """Logs a delivery's outcome: delivered, or retried after a backoff until the tries run out."""
        if outcome.error is None:
            conn.execute(_DELIVERED_SQL, (outcome.status, outcome.folded, outcome.delivery_id))
            self.counts["delivered"] += 1
            return
        wait = timedelta(seconds=backoff(outcome.attempts, self.base_backoff_s, self.max_backoff_s))
        conn.execute(_FAILED_SQL, (self.max_attempts, wait, outcome.status, outcome.error[:500], outcome.delivery_id))
        self.counts["failed" if outcome.attempts >= self.max_attempts else "retried"] += 1
        log.warning(
            "%s: delivery %d to %s failed (try %d): %s",
            self.name, outcome.delivery_id, outcome.url, outcome.attempts, outcome.error,
        )  # fmt: skip

    def _post(self, url: str, body: bytes, secret: str, change: str, delivery_id: int) -> tuple[int | None, str | None]:
        headers = {"X-Patrolnet-Event": change, "X-Patrolnet-Delivery": str(delivery_id)}
        if secret:
            headers["X-Patrolnet-Signature"] = sign(body, secret)
        return self._safe_post(url, body, headers=headers)

    def _safe_post(
        self,
        url: str,
        body: bytes,
        answer: Callable[[bytes], str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int | None, str | None]:
        headers = {"Content-Type": "application/json", "User-Agent": "patrolnet-webhooks", **(headers or {})}
        try:
            return post(url, body, headers, self.policy, self.timeout_s, answer)
        except Exception:
            # A target that breaks the client in a way not foreseen fails its delivery, not the dispatcher.
            log.exception("%s: POST to %s", self.name, url)
            return None, NO_RESPONSE
