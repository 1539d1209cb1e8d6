"""Video clips of alerts: the resumable upload an edge node makes, and the clip a desk plays (with ranges).

An edge node (a key of role edge, scoped to its site) registers a clip of one of its alerts, then sends its
bytes in chunks with ``Content-Range`` from where the centre stands (``edge.clip_upload`` is the client; the
store is ``alerts.store.clips``). A desk reads the clips of an alert it may see: the list at
``/api/v1/alerts/{id}/clips``, each clip at ``/api/v1/clips/{id}`` as ``video/mp4``, with HTTP ranges, so a
browser's player seeks without downloading the whole; any other clip answers 404, like a snapshot.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from alerts.api.http import ClipUploader, Pool, Reader, Settings, base_url, refusal, visible_alert
from alerts.store import clips
from alerts.store.clips import Clip, ClipRefused

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["clips"])
CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,15})-([0-9]{1,15})/([0-9]{1,15})", re.ASCII)


class ClipRegistration(BaseModel):
    id: UUID = Field(description="The clip's id, given by the node.")
    alert_id: UUID = Field(description="The alert it shows.")
    camera: str = Field(min_length=1, max_length=64, description="The camera it comes from.")
    started_at: datetime = Field(description="Wall time of its first frame (a key frame).")
    ended_at: datetime = Field(description="Wall time of its last frame.")
    bytes: int = Field(gt=0, le=10**12, description="Its size.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole file, in hex.")


class ClipState(BaseModel):
    received: int = Field(description="Bytes the centre holds: the next chunk starts here.")
    complete: bool = Field(description="Stored whole and checked: the node may delete its copy.")


class ClipSummary(BaseModel):
    id: UUID = Field(description="The clip's id.")
    url: str = Field(description="Where to fetch it (video/mp4, ranges accepted).")
    camera: str = Field(description="The camera it comes from.")
    started_at: datetime = Field(description="Wall time of its first frame.")
    ended_at: datetime = Field(description="Wall time of its last frame.")
    bytes: int = Field(description="Its size.")


def _state(clip: Clip) -> ClipState:
    return ClipState(received=clip.received, complete=clip.complete)


def _refused(exc: ClipRefused) -> JSONResponse:
    content: dict[str, object] = {"detail": str(exc)}
    if exc.received is not None:
        content["received"] = exc.received
    return JSONResponse(status_code=exc.status, content=content)


@router.post(
    "/clips",
    summary="Register a clip of an alert (an edge node); answers how much of it the centre holds",
    response_model=ClipState,
    responses={404: refusal("no such alert within the key's places"), 409: refusal("registered differently")},
)
async def register_clip(pool: Pool, who: ClipUploader, body: ClipRegistration) -> ClipState | JSONResponse:
    if body.ended_at < body.started_at:
        raise HTTPException(422, "ended_at is before started_at")
    clip = Clip(**body.model_dump(), received=0, complete=False)
    try:
        return _state(await clips.register(pool, who, clip))
    except ClipRefused as exc:
        return _refused(exc)


@router.put(
    "/clips/{clip_id}/content",
    summary="One chunk of a registered clip (an edge node), at the offset the centre holds",
    response_model=ClipState,
    responses={409: refusal("not where the centre stands: `received` says where"), 422: refusal("bad chunk")},
)
async def put_chunk(
    request: Request,
    pool: Pool,
    settings: Settings,
    who: ClipUploader,
    clip_id: UUID,
    content_range: Annotated[str, Header(description="bytes FROM-TO/SIZE")],
) -> ClipState | JSONResponse:
    match = CONTENT_RANGE.fullmatch(content_range)
    if match is None:
        raise HTTPException(422, "Content-Range must be bytes FROM-TO/SIZE")
    start, end, _ = map(int, match.groups())
    data = await request.body()
    if not data or end - start + 1 != len(data):
        raise HTTPException(422, f"Content-Range says {end - start + 1} bytes, the body has {len(data)}")
    try:
        return _state(await clips.write_chunk(pool, Path(settings.clip_dir), clip_id, start, data))
    except ClipRefused as exc:
        return _refused(exc)


@router.get("/alerts/{alert_id}/clips", summary="The video clips of an alert")
async def list_clips(request: Request, pool: Pool, who: Reader, alert_id: UUID) -> list[ClipSummary]:
    await visible_alert(pool, alert_id, who)
    base = base_url(request)
    return [
        ClipSummary(id=c.id, url=clips.clip_url(base, c.id), camera=c.camera, started_at=c.started_at,
                    ended_at=c.ended_at, bytes=c.bytes)
        for c in await clips.alert_clips(pool, alert_id)
    ]  # fmt: skip


@router.get(
    "/clips/{clip_id}",
    summary="A video clip (MP4, index first); Range requests are answered 206",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}, "description": "the clip"}, 206: {"description": "a range"}},
)
async def get_clip(pool: Pool, settings: Settings, who: Reader, clip_id: UUID) -> FileResponse:
    alert_id = await clips.clip_alert(pool, clip_id)
    if alert_id is not None:
        await visible_alert(pool, alert_id, who)
    path = clips.clip_file(Path(settings.clip_dir), clip_id)
    if alert_id is None or not path.is_file():
        raise HTTPException(404, f"no clip {clip_id} that this key may see")
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})
