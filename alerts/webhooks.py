"""Webhooks: alert changes POSTed as JSON to the URLs admins register, with retries and backoff.

A trigger on ``alert_changes`` queues one ``webhook_deliveries`` row per
matching webhook in the same transaction as the change, whoever made it
(ingest, a desk, a citizen report). ``patrolnet webhooks`` runs dispatchers,
as many as wanted: each claims due rows with ``FOR UPDATE SKIP LOCKED`` and
leases them (pushes ``next_at`` ahead) before posting, so no transaction stays
open across a slow remote server and a dispatcher that dies mid-post only
delays a delivery until its lease ends. It runs apart from the API so a slow
receiver never holds API connections, and scales on its own.

Each POST carries ``X-Patrolnet-Signature: sha256=<hex HMAC of the body>``
when the webhook has a secret. Deliveries of one alert may arrive out of
order after a retry: the body's ``seq`` and ``alert.revision`` order them.

Example:
    >>> sign(b'{"a": 1}', "s3cret")[:7]
    'sha256='
    >>> backoff(1, base_s=2.0, max_s=600.0), backoff(4, base_s=2.0, max_s=600.0), backoff(20, base_s=2.0, max_s=600.0)
    (2.0, 16.0, 600.0)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta

import psycopg

from alerts.rows import ALERT_COLUMNS, row_to_alert

log = logging.getLogger(__name__)

_CLAIM_SQL = """
UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_at = now() + %(lease)s
FROM webhooks w
WHERE d.id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_at <= now()
               ORDER BY next_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND w.id = d.webhook_id
RETURNING d.id, d.seq, d.change, d.attempts, d.alert_id, w.url, w.secret"""

_DELIVERED_SQL = (
    "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), last_status = %s, last_error = NULL"
    " WHERE id = %s"
)
_FAILED_SQL = (
    "UPDATE webhook_deliveries SET state = CASE WHEN attempts >= %s THEN 'failed' ELSE 'pending' END,"
    " next_at = now() + %s, last_status = %s, last_error = %s WHERE id = %s"
)


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
        self.counts: Counter[str] = Counter()
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

    def run_once(self) -> int:
        """Claims due deliveries, posts them, records the outcome; returns how many it tried."""
        lease = timedelta(seconds=self.timeout_s * 2 + 10)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            claimed = conn.execute(_CLAIM_SQL, {"lease": lease, "limit": self.batch}).fetchall()
            if not claimed:
                return 0
            alerts = {
                row[0]: row_to_alert(row)
                for row in conn.execute(
                    f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ANY(%s)", ([c[4] for c in claimed],)
                )
            }
            for delivery_id, seq, change, attempts, alert_id, url, secret in claimed:
                alert = alerts[alert_id]
                body = json.dumps(
                    {"delivery": delivery_id, "seq": seq, "change": change, "alert": alert.model_dump(mode="json"),
                     "cap_url": f"{self.public_url}/api/v1/alerts/{alert_id}/cap" if self.public_url else None},
                ).encode()  # fmt: skip
                status, error = self._post(url, body, secret, change, delivery_id)
                if error is None:
                    conn.execute(_DELIVERED_SQL, (status, delivery_id))
                    self.counts["delivered"] += 1
                else:
                    wait = timedelta(seconds=backoff(attempts, self.base_backoff_s, self.max_backoff_s))
                    conn.execute(_FAILED_SQL, (self.max_attempts, wait, status, error[:500], delivery_id))
                    self.counts["failed" if attempts >= self.max_attempts else "retried"] += 1
                    log.warning(
                        "%s: delivery %d to %s failed (try %d): %s", self.name, delivery_id, url, attempts, error
                    )
        return len(claimed)

    def _post(self, url: str, body: bytes, secret: str, change: str, delivery_id: int) -> tuple[int | None, str | None]:
        headers = {"Content-Type": "application/json", "User-Agent": "patrolnet-webhooks",
                   "X-Patrolnet-Event": change, "X-Patrolnet-Delivery": str(delivery_id)}  # fmt: skip
        if secret:
            headers["X-Patrolnet-Signature"] = sign(body, secret)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, str(exc)
