"""Snapshot requests: a camera's picture now, asked of the node that runs the camera (migration 0019).

A camera-detected case's recheck records a request (``request``, in the step's transaction) and NOTIFYs
``snapshot_requests``. An ingest worker's dispatcher (``alerts.intake.snapshot_commands``) claims what is due
(``claim_due``: new, or published ``again_s`` ago and still pending; ``FOR UPDATE SKIP LOCKED``, so several workers
never publish one request in the same round) and publishes a ``SnapshotCommand`` to the node that last reported
the camera in its heartbeat (``devices``). The node answers with a ``Snapshot`` on its uplink, and ingest stores
it with the rest of its batch (``store``): the first answer of a pending request fulfils it (its JPEG joins the
step's photos) or fails it (the node's reason in the step's note); a later copy changes nothing; an answer to a
request the site never had is a dead letter. A request still pending at ``expires_at`` expires (``expire``):
the step keeps the picture the centre held and its note says why there is no fresh one. Each outcome is a
``case_picture`` change of the case's alert, for the streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import psycopg
from psycopg import AsyncConnection

from alerts.core.models import DeadLetter, Place, Snapshot
from alerts.core.protocol import encode, uplink_topic

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "snapshot_requests"
"""What a new request NOTIFYs at commit, and ingest's dispatcher LISTENs on."""
CHANGE = "case_picture"
"""The alert change of a request's outcome: a fresh picture, a node's refusal, or expiry."""

_REQUEST_SQL = """
INSERT INTO snapshot_requests (site, device, case_id, step_id, expires_at)
VALUES (%s, %s, %s, %s, now() + %s) RETURNING id"""
_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM snapshot_requests
    WHERE status = 'pending' AND expires_at > now() AND (published_at IS NULL OR published_at <= now() - %s)
    ORDER BY requested_at LIMIT %s FOR UPDATE SKIP LOCKED)
UPDATE snapshot_requests r SET published_at = now(), publishes = r.publishes + 1,
    node_id = coalesce((SELECT d.node_id FROM devices d WHERE d.site = r.site AND d.device = r.device), r.node_id)
FROM due WHERE r.id = due.id
RETURNING r.id, r.site, r.device, r.node_id"""
_EXPIRE_SQL = """
UPDATE snapshot_requests SET status = 'expired', fulfilled_at = now(), reason = CASE WHEN node_id IS NULL
    THEN 'no node reports camera ' || device ELSE 'node ' || node_id || ' did not answer in time' END
WHERE status = 'pending' AND expires_at <= now()
RETURNING (SELECT alert_id FROM cases c WHERE c.id = case_id), step_id, device, reason"""
_ANSWER_SQL = """
UPDATE snapshot_requests r SET status = %(status)s, fulfilled_at = now(), taken_at = %(taken)s, reason = %(reason)s
WHERE id = %(id)s AND site = %(site)s AND device = %(device)s AND status = 'pending'
RETURNING case_id, step_id, (SELECT alert_id FROM cases c WHERE c.id = r.case_id)"""
_KNOWN_SQL = "SELECT status FROM snapshot_requests WHERE id = %s AND site = %s AND device = %s"
_PHOTO_SQL = """
INSERT INTO case_photos (case_id, step_id, source, taken_at, content_type, data)
VALUES (%s, %s, 'camera', %s, 'image/jpeg', %s) RETURNING id"""
_LINK_PHOTO_SQL = "UPDATE snapshot_requests SET photo_id = %s WHERE id = %s"
_NOTE_SQL = "UPDATE case_steps SET note = note || %s WHERE id = %s"


@dataclass(frozen=True)
class Due:
    """A request to publish: its camera, and the node that reports it (None: no node has, yet)."""

    id: UUID
    site: str
    device: str
    node_id: str | None


async def request(conn: AsyncConnection, case_id: UUID, step_id: int, camera: Place, expires_s: float) -> UUID:
    """Records a request for ``camera``'s picture for a case's step, in the caller's transaction; the dispatchers
    hear of it at commit."""
    row = await (
        await conn.execute(_REQUEST_SQL, (camera.site, camera.device, case_id, step_id, timedelta(seconds=expires_s)))
    ).fetchone()
    assert row is not None
    await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(row[0])))
    return row[0]


def claim_due(conn: psycopg.Connection, again_s: float, limit: int = 100) -> list[Due]:
    """Claims the requests to publish now, marking them published (in the caller's transaction)."""
    rows = conn.execute(_CLAIM_SQL, (timedelta(seconds=again_s), limit)).fetchall()
    return [Due(*row) for row in rows]


def expire(conn: psycopg.Connection) -> list[UUID]:
    """Expires the requests past their time, saying so in their steps' notes; the alerts whose case changed."""
    alerts = []
    for alert_id, step_id, device, reason in conn.execute(_EXPIRE_SQL).fetchall():
        log.info("snapshot request for camera %s expired: %s", device, reason)
        note = f" (no fresh picture from camera {device}: {reason}; the held picture stays)"
        conn.execute(_NOTE_SQL, (note, step_id))
        alerts.append(alert_id)
    return alerts


def store(cur: psycopg.Cursor, snapshots: list[Snapshot]) -> tuple[list[UUID], list[DeadLetter]]:
    """Stores nodes' answers (in the caller's transaction): the alerts whose case got a picture or a refusal, and
    dead letters for answers to requests their site never had."""
    changed, unasked = [], []
    for snap in snapshots:
        device = snap.place.device or ""
        answer = {"status": "failed" if snap.jpeg is None else "fulfilled", "taken": snap.ts, "reason": snap.error,
                  "id": snap.request_id, "site": snap.place.site, "device": device}  # fmt: skip
        row = cur.execute(_ANSWER_SQL, answer).fetchone()
        if row is None:
            known = cur.execute(_KNOWN_SQL, (snap.request_id, snap.place.site, device)).fetchone()
            if known is None:
                reason = f"no snapshot request {snap.request_id} for camera {device!r} of site {snap.place.site!r}"
                log.warning("dead letter: %s", reason)
                topic = uplink_topic(snap.place.site, "snapshot")
                unasked.append(DeadLetter(topic=topic, payload=encode("snapshot", snap), reason=reason, source="store"))
            else:
                log.info("snapshot %s: request %s is %s already; kept as it is", snap.id, snap.request_id, known[0])
            continue
        case_id, step_id, alert_id = row
        if snap.jpeg is None:
            note = f" (camera {device} gave no fresh picture: {snap.error}; the held picture stays)"
        else:
            photo = cur.execute(_PHOTO_SQL, (case_id, step_id, snap.ts, snap.jpeg)).fetchone()
            cur.execute(_LINK_PHOTO_SQL, (photo[0] if photo else None, snap.request_id))
            note = f" (camera {device} picture of {snap.ts.isoformat()} taken on request)"
        cur.execute(_NOTE_SQL, (note, step_id))
        changed.append(alert_id)
    return changed, unasked
