"""Video clips of alerts: the rows saying what the centre holds, the files holding the bytes, and retention.

A clip arrives in chunks (``alerts.api.routes_clips``); each chunk is written at the offset the row says the
centre has (``received``), under the row's lock, so a repeated or concurrent chunk cannot interleave. Once the
last byte is in, the file's SHA-256 is checked against the one the node sent: a match renames
``<id>.part`` to ``<id>.mp4``, marks the row complete and logs a ``clip_ready`` change of its alert (the
streams and webhooks get it); a mismatch starts the clip again from 0.

The folder (``PATROLNET_CLIP_DIR``) must be shared by every API replica that takes uploads.

Retention is per alert kind (``PATROLNET_CLIP_RETENTION``, e.g. ``security=30,fire=90``, in days; a kind not
named keeps its clips ``DEFAULT_DAYS``), applied by ``prune_clips`` (run by ``patrolnet db prune``). Uploads
left unfinished for a day are dropped too.

Example:
    >>> retention_days("security=7, fire=90")["security"], retention_days("")["fire"]
    (7.0, 30.0)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from alerts.auth import Principal
from alerts.core.models import EventKind
from alerts.store.database import RECORD_CHANGES
from alerts.store.queries import scope_clause

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30.0
UNFINISHED_DAYS = 1.0
CLIP_READY = "clip_ready"
COLUMNS = "c.id, c.alert_id, c.camera, c.started_at, c.ended_at, c.bytes, c.sha256, c.received, c.complete"


class Clip(NamedTuple):
    id: UUID
    alert_id: UUID
    camera: str
    started_at: datetime
    ended_at: datetime
    bytes: int
    sha256: str
    received: int
    complete: bool


class ClipRefused(Exception):
    """What the caller sent does not fit: ``status`` is the HTTP answer, ``received`` what the centre has."""

    def __init__(self, status: int, message: str, received: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.received = received


def retention_days(spec: str) -> dict[str, float]:
    """Days clips are kept per alert kind, from ``kind=days,...``; ValueError names what is wrong."""
    days = dict.fromkeys((k.value for k in EventKind), DEFAULT_DAYS)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        kind, _, value = item.partition("=")
        if kind.strip() not in days or not value.strip().replace(".", "", 1).isdigit():
            raise ValueError(f"PATROLNET_CLIP_RETENTION: {item!r} is not <kind>=<days> with a kind of {list(days)}")
        days[kind.strip()] = float(value)
    return days


def clip_file(folder: Path, clip_id: UUID, complete: bool = True) -> Path:
    return folder / f"{clip_id}.{'mp4' if complete else 'part'}"


async def register(pool: AsyncConnectionPool, who: Principal, clip: Clip) -> Clip:
    """Registers a clip of an alert within the caller's scope (again: the row as it stands); 404 if none."""
    clauses, params = scope_clause(who, "a")
    scope = " AND ".join(clauses) or "TRUE"
    async with pool.connection() as conn, conn.transaction():
        alert = await (
            await conn.execute(f"SELECT a.kind FROM alerts a WHERE a.id = %s AND {scope}", [clip.alert_id, *params])
        ).fetchone()
        if alert is None:
            raise ClipRefused(404, f"no alert {clip.alert_id} of this node's places stored yet")
        await conn.execute(
            "INSERT INTO clips (id, alert_id, camera, kind, started_at, ended_at, bytes, sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            [clip.id, clip.alert_id, clip.camera, alert[0], clip.started_at, clip.ended_at, clip.bytes, clip.sha256],
        )
        stored = await _locked(conn, clip.id)
    if stored is None or (stored.alert_id, stored.bytes, stored.sha256) != (clip.alert_id, clip.bytes, clip.sha256):
        raise ClipRefused(409, f"clip {clip.id} is registered with another alert, size or checksum")
    return stored


async def _locked(conn: AsyncConnection, clip_id: UUID) -> Clip | None:
    row = await (await conn.execute(f"SELECT {COLUMNS} FROM clips c WHERE c.id = %s FOR UPDATE", [clip_id])).fetchone()
    return Clip(*row) if row else None


async def write_chunk(pool: AsyncConnectionPool, folder: Path, clip_id: UUID, start: int, data: bytes) -> Clip:
    """Writes a chunk at ``start``, which must be where the centre stands; completes the clip at its last byte."""
    async with pool.connection() as conn, conn.transaction():
        clip = await _locked(conn, clip_id)
        if clip is None:
            raise ClipRefused(404, f"no clip {clip_id}: register it first")
        if clip.complete:
            return clip
        if start != clip.received:
            raise ClipRefused(409, f"the centre has {clip.received} bytes of clip {clip_id}", clip.received)
        if start + len(data) > clip.bytes:
            raise ClipRefused(422, f"the chunk ends past the clip's {clip.bytes} bytes")
        part = clip_file(folder, clip_id, complete=False)
        await asyncio.to_thread(_write_at, part, start, data)
        received = start + len(data)
        if received < clip.bytes:
            await conn.execute("UPDATE clips SET received = %s WHERE id = %s", [received, clip_id])
            return clip._replace(received=received)
        if await asyncio.to_thread(_sha256, part) != clip.sha256:
            part.unlink()
            await conn.execute("UPDATE clips SET received = 0 WHERE id = %s", [clip_id])
            raise ClipRefused(422, f"clip {clip_id} does not match its SHA-256; send it again from 0", 0)
        part.rename(clip_file(folder, clip_id))
        await conn.execute(
            "UPDATE clips SET received = bytes, complete = true, completed_at = now() WHERE id = %s", [clip_id]
        )
        await conn.execute(RECORD_CHANGES, [[clip.alert_id], [CLIP_READY]])
    log.info("clip %s of alert %s stored whole (%d bytes)", clip_id, clip.alert_id, clip.bytes)
    return clip._replace(received=clip.bytes, complete=True)


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Writes at ``offset`` and cuts what lay beyond: bytes of a write whose row update never committed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        os.pwrite(fd, data, offset)
        os.ftruncate(fd, offset + len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def alert_clips(pool: AsyncConnectionPool, alert_id: UUID) -> list[Clip]:
    """The complete clips of an alert, oldest first (check the caller may see the alert first)."""
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {COLUMNS} FROM clips c WHERE c.alert_id = %s AND c.complete ORDER BY c.started_at",
                [alert_id],
            )
        ).fetchall()
    return [Clip(*row) for row in rows]


async def clip_alert(pool: AsyncConnectionPool, clip_id: UUID) -> UUID | None:
    """The alert of a complete clip, or None."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT alert_id FROM clips WHERE id = %s AND complete", [clip_id])).fetchone()
    return row[0] if row else None


def clip_url(base: str, clip_id: UUID) -> str:
    return f"{base}/api/v1/clips/{clip_id}"


def prune_clips(conninfo: str, folder: Path, days: dict[str, float]) -> int:
    """Deletes clips past their kind's retention, and uploads unfinished for a day, rows and files; returns how
    many."""
    kinds, ages = list(days), [f"{d} days" for d in days.values()]
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "DELETE FROM clips c USING unnest(%s::text[], %s::interval[]) AS r (kind, keep)"
            " WHERE (c.kind = r.kind AND c.complete AND c.completed_at < now() - r.keep)"
            " OR (c.kind = r.kind AND NOT c.complete AND c.created_at < now() - %s::interval)"
            " RETURNING c.id, c.complete",
            [kinds, ages, f"{UNFINISHED_DAYS} days"],
        ).fetchall()
    for clip_id, complete in rows:
        clip_file(folder, clip_id, complete).unlink(missing_ok=True)
    log.info("pruned %d clips", len(rows))
    return len(rows)
