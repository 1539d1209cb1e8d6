"""Prometheus metrics of an API process: requests by route and status, latency, and store gauges.

The store gauges include ingest liveness: per ingest worker (``ingest_workers``, written every second by each
worker's watchdog), the seconds since its last committed batch and since it last reported, and its counters;
and the number of nodes the watchdog holds offline. Per node, what waits in its spool unconfirmed by ingest
and the age of the oldest, as its newest heartbeat said. Alert on a worker whose report is old (it is gone), on
``patrolnet_nodes_offline`` and on a growing ``patrolnet_node_oldest_unconfirmed_seconds``; an old last batch
alone may only mean a quiet uplink.

Example:
    >>> m = ApiMetrics()
    >>> m.set_ingest([("ingest-a", 2.5, 0.4, {"messages": 7, "batches": 3})], nodes_offline=1)
    >>> m.registry.get_sample_value("patrolnet_ingest_worker_count", {"worker": "ingest-a", "counter": "messages"})
    7.0
    >>> m.registry.get_sample_value("patrolnet_nodes_offline")
    1.0
    >>> m.set_nodes([("node-1", 12, 40.5), ("node-2", 0, None)])
    >>> m.registry.get_sample_value("patrolnet_node_oldest_unconfirmed_seconds", {"node": "node-1"})
    40.5
    >>> m.registry.get_sample_value("patrolnet_node_oldest_unconfirmed_seconds", {"node": "node-2"})
    0.0

``GET /metrics`` needs an operator or admin key, or the scrape token set in
``PATROLNET_METRICS_TOKEN`` (a Prometheus ``bearer_token``), so a scraper
holds no key that could read alerts. Each API replica exposes its own
counters; the gauges read the store when scraped and so agree across replicas.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.api.http import Pool, api_key, get_settings, lookup
from alerts.auth import Permission

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


IngestRow = tuple[str, float | None, float, dict[str, Any]]
"""An ingest worker: name, seconds since its last batch (None before its first), since its report; counters."""
NodeRow = tuple[str, int, float | None]
"""A node: id, unconfirmed messages, age of the oldest (None when none)."""


class ApiMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "patrolnet_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "patrolnet_http_request_seconds",
            "Time to answer (to the first byte for streams)",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.open_alerts = Gauge(
            "patrolnet_open_alerts", "Active alerts not yet resolved", ["kind", "status"], registry=self.registry
        )
        self.webhooks_pending = Gauge(
            "patrolnet_webhook_deliveries_pending", "Webhook deliveries waiting", registry=self.registry
        )

        self.ingest_batch_age = Gauge(
            "patrolnet_ingest_last_batch_age_seconds",
            "Seconds since the ingest worker last committed a batch (absent before its first)",
            ["worker"],
            registry=self.registry,
        )
        self.ingest_report_age = Gauge(
            "patrolnet_ingest_report_age_seconds",
            "Seconds since the ingest worker last reported its liveness (every second while it runs)",
            ["worker"],
            registry=self.registry,
        )
        self.ingest_counters = Gauge(
            "patrolnet_ingest_worker_count",
            "The ingest worker's own counters since it started: messages, batches, dead letters, retries",
            ["worker", "counter"],
            registry=self.registry,
        )
        self.nodes_offline = Gauge(
            "patrolnet_nodes_offline",
            "Nodes the watchdog holds offline (open node_offline alerts)",
            registry=self.registry,
        )

        self.node_unconfirmed = Gauge(
            "patrolnet_node_unconfirmed",
            "Messages in the node's spool that ingest has not confirmed storing (its newest heartbeat)",
            ["node"],
            registry=self.registry,
        )
        self.node_oldest_unconfirmed = Gauge(
            "patrolnet_node_oldest_unconfirmed_seconds",
            "Age of the oldest message in the node's spool not confirmed by ingest (0 when none; newest heartbeat)",
            ["node"],
            registry=self.registry,
        )

    def install(self, app: FastAPI) -> None:
        app.add_middleware(_Measure, metrics=self)

    def set_ingest(self, workers: Iterable[IngestRow], nodes_offline: int) -> None:
        """The ingest liveness gauges, from the ``ingest_workers`` rows as they are now."""
        for gauge in (self.ingest_batch_age, self.ingest_report_age, self.ingest_counters):
            gauge.clear()
        for name, batch_age, report_age, counters in workers:
            if batch_age is not None:
                self.ingest_batch_age.labels(name).set(batch_age)
            self.ingest_report_age.labels(name).set(report_age)
            for counter, value in counters.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.ingest_counters.labels(name, counter).set(value)
        self.nodes_offline.set(nodes_offline)

    def set_nodes(self, nodes: Iterable[NodeRow]) -> None:
        """The nodes' unconfirmed backlog gauges, from their newest heartbeats."""
        for gauge in (self.node_unconfirmed, self.node_oldest_unconfirmed):
            gauge.clear()
        for node, unconfirmed, oldest_s in nodes:
            self.node_unconfirmed.labels(node).set(unconfirmed)
            self.node_oldest_unconfirmed.labels(node).set(oldest_s or 0.0)


class _Measure:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware costs more per request than the list query)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The route's template, never the raw path: ids must not make a series each.
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.requests.labels(scope["method"], route, str(message["status"])).inc()
                self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, measured_send)


async def metrics_reader(request: Request, key: Annotated[str | None, Depends(api_key)]) -> None:
    token = get_settings(request).metrics_token
    if key and token and hmac.compare_digest(key, token):
        return
    who = await lookup(request, key) if key else None
    if who is None:
        raise HTTPException(401, "an operator or admin key, or the metrics token, is required")
    if not who.may(Permission.METRICS):
        raise HTTPException(403, f"role {who.role} may not read metrics")


_INGEST_SQL = (
    "SELECT name, extract(epoch FROM now() - last_batch_at)::float8, extract(epoch FROM now() - seen_at)::float8,"
    " counters FROM ingest_workers ORDER BY name"
)
_NODES_SQL = (
    "SELECT node_id, coalesce((counters->>'unconfirmed')::float8, 0)::int,"
    " (counters->>'oldest_unconfirmed_s')::float8 FROM nodes ORDER BY node_id"
)
_OFFLINE_SQL = "SELECT count(DISTINCT source) FROM alerts WHERE type = 'node_offline' AND active"


@router.get(
    "/metrics",
    summary="Prometheus metrics (operator or admin key, or PATROLNET_METRICS_TOKEN)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    dependencies=[Depends(metrics_reader)],
)
async def metrics(request: Request, pool: Pool) -> Response:
    m: ApiMetrics = request.app.state.metrics
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT kind, status, count(*) FROM alerts WHERE active AND status IN ('new', 'acknowledged')"
                " GROUP BY kind, status"
            )
        ).fetchall()
        pending = await (
            await conn.execute("SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")
        ).fetchone()
        workers = await (await conn.execute(_INGEST_SQL)).fetchall()
        offline = await (await conn.execute(_OFFLINE_SQL)).fetchone()
        nodes = await (await conn.execute(_NODES_SQL)).fetchall()
    m.open_alerts.clear()
    for kind, status, n in rows:
        m.open_alerts.labels(kind, status).set(n)
    m.webhooks_pending.set(pending[0] if pending else 0)  # an aggregate always answers one row
    m.set_ingest(workers, offline[0] if offline else 0)
    m.set_nodes(nodes)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
