"""The node's clip spool, and the upload that takes each clip to the centre, resumable, until it is stored whole.

The spool is a folder: ``<id>.mp4`` and its ``<id>.json`` (the ``ClipMeta``), the JSON written last, so a
clip without one is an unfinished write, deleted at start. It is bounded (``max_spool_bytes``): over it, the
oldest clips of non-alarm alerts go first; an alarm's clip is never deleted before the centre confirms it.

Why HTTP and not the MQTT uplink: a clip is megabytes, and the broker's messages and in-flight window are
sized for events; HTTP ranges make the upload resumable for free. The protocol (``alerts.api.routes_clips``),
with the node's edge API key:

- ``POST /api/v1/clips`` with the clip's metadata: the centre registers it (once; again is harmless) and
  answers how many bytes it has (``received``) and whether it holds it whole (``complete``);
- ``PUT /api/v1/clips/{id}/content`` with ``Content-Range: bytes FROM-TO/SIZE`` for each chunk from
  ``received`` on; a chunk that does not start where the centre is answers 409, and the node asks again;
- the last chunk makes the centre check the SHA-256 of the whole: ``complete`` means stored and checked, and
  only then is the clip deleted here. A mismatch (422) starts the clip again from 0.

Any failure (no connection, a 5xx, the alert not yet at the centre) is retried after 1, 2, 4 ... up to
``retry_max_s`` seconds, with jitter; the upload resumes where the centre stands.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import urllib.error
import urllib.request
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from alerts.core.models import Alert, EventKind
from alerts.core.settings import optional_setting
from edge.clips import ClipMeta, ClipRecorder, ClipsConfig

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
EDGE_KEY = "PATROLNET_EDGE_API_KEY"


def meta_json(meta: ClipMeta) -> dict[str, Any]:
    """The metadata as JSON values."""
    out = asdict(meta)
    for name, value in out.items():
        if isinstance(value, UUID | datetime):
            out[name] = str(value) if isinstance(value, UUID) else value.isoformat()
    return out


def registration(meta: ClipMeta) -> dict[str, Any]:
    """The metadata as the centre's ``POST /api/v1/clips`` takes it: it takes the alert's kind from the alert, and
    being an alarm matters only here."""
    return {name: value for name, value in meta_json(meta).items() if name not in ("kind", "alarm")}


def meta_from_json(data: dict[str, Any]) -> ClipMeta:
    return ClipMeta(
        id=UUID(data["id"]),
        alert_id=UUID(data["alert_id"]),
        camera=data["camera"],
        kind=EventKind(data["kind"]),
        alarm=bool(data["alarm"]),
        started_at=datetime.fromisoformat(data["started_at"]),
        ended_at=datetime.fromisoformat(data["ended_at"]),
        bytes=int(data["bytes"]),
        sha256=data["sha256"],
    )


class ClipSpool:
    """Clips waiting for the centre; see the module docstring. Thread-safe."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.evicted = 0
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob("*.tmp"):
            leftover.unlink()
        for video in folder.glob("*.mp4"):
            if not video.with_suffix(".json").exists():
                video.unlink()

    def add(self, meta: ClipMeta, written: Path) -> None:
        """Takes a clip written to ``written`` (in the spool folder), then evicts what the bound requires."""
        with self._lock:
            written.rename(self.folder / f"{meta.id}.mp4")
            sidecar = self.folder / f"{meta.id}.json"
            sidecar.with_suffix(".json.tmp").write_text(json.dumps(meta_json(meta)))
            sidecar.with_suffix(".json.tmp").rename(sidecar)
            self._evict()
            self._added.notify_all()

    def pending(self) -> list[ClipMeta]:
        """Clips not yet confirmed, alarms first, then oldest first."""
        with self._lock:
            return self._pending()

    def _pending(self) -> list[ClipMeta]:
        metas = [meta_from_json(json.loads(p.read_text())) for p in self.folder.glob("*.json")]
        return sorted(metas, key=lambda m: (not m.alarm, m.started_at))

    def path(self, meta: ClipMeta) -> Path:
        return self.folder / f"{meta.id}.mp4"

    def remove(self, meta: ClipMeta) -> None:
        """Forgets a clip the centre confirmed stored (or that was evicted): the metadata first."""
        (self.folder / f"{meta.id}.json").unlink(missing_ok=True)
        self.path(meta).unlink(missing_ok=True)

    def wait(self, timeout: float) -> None:
        with self._added:
            self._added.wait(timeout)

    def _evict(self) -> None:
        metas = self._pending()
        total = sum(m.bytes for m in metas)
        for meta in sorted((m for m in metas if not m.alarm), key=lambda m: m.started_at):
            if total <= self.max_bytes:
                return
            log.warning("clip spool full: deleting clip %s of alert %s", meta.id, meta.alert_id)
            self.remove(meta)
            self.evicted += 1
            total -= meta.bytes


class UploadError(Exception):
    """The centre did not take a request; retried later."""


class ClipUploader:
    """Uploads the spool's clips to the centre on a thread of its own; see the module docstring."""

    def __init__(self, spool: ClipSpool, settings: ClipsConfig, api_key: str) -> None:
        self.spool = spool
        self.settings = settings
        self.api_key = api_key
        self.uploaded = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.spool._added:
            self.spool._added.notify_all()
        self._thread.join(timeout=TIMEOUT_S + 1)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            pending = self.spool.pending()
            if not pending:
                self.spool.wait(1.0)
                continue
            try:
                for meta in pending:
                    if self._stop.is_set():
                        return
                    self.upload(meta)
                attempt = 0
            except (UploadError, OSError, http.client.HTTPException) as exc:
                self.failures += 1
                ceiling = min(self.settings.retry_max_s, 2.0**attempt)
                attempt += 1
                log.warning("clip upload failed (%s); again in up to %.0f s", exc, ceiling)
                self._stop.wait(random.uniform(ceiling / 2, ceiling))

    def upload(self, meta: ClipMeta) -> None:
        """Sends one clip from where the centre stands, and deletes it here once the centre has it whole."""
        state = self._request("POST", "/api/v1/clips", json.dumps(registration(meta)).encode(), "application/json")
        received = int(state["received"])
        path = self.spool.path(meta)
        with path.open("rb") as file:
            while not state["complete"]:
                file.seek(received)
                chunk = file.read(self.settings.chunk_bytes)
                if not chunk:
                    raise UploadError(f"clip {meta.id}: the centre has {received} of {meta.bytes} bytes, not complete")
                headers = {"Content-Range": f"bytes {received}-{received + len(chunk) - 1}/{meta.bytes}"}
                state = self._request("PUT", f"/api/v1/clips/{meta.id}/content", chunk, "video/mp4", headers)
                received = int(state["received"])
        self.spool.remove(meta)
        self.uploaded += 1
        log.info("clip %s of alert %s stored at the centre (%d bytes)", meta.id, meta.alert_id, meta.bytes)

    def _request(
        self, method: str, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        request = urllib.request.Request(
            self.settings.api_url.rstrip("/") + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": content_type, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code == 409 and path.endswith("/content"):
                # Not where the centre stands (a chunk it already had, after a lost answer): ask it again.
                return {"received": json.loads(detail).get("received", 0), "complete": False}
            raise UploadError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc


class NodeClips:
    """A node's clip recorders (one per camera), their spool, and the uploader (when ``api_url`` is set)."""

    def __init__(self, settings: ClipsConfig, cameras: list[str]) -> None:
        self.spool = ClipSpool(settings.spool, settings.max_spool_bytes)
        self.recorders = {cid: ClipRecorder(cid, settings, self.spool.add) for cid in cameras}
        """Each is attached to its camera's source (``CameraSource.attach``), which hands it the packets."""
        key = optional_setting(EDGE_KEY) if settings.api_url else None
        if settings.api_url and not key:
            log.error("clips.api_url is set but %s is not: clips stay on the node", EDGE_KEY)
        self.uploader = ClipUploader(self.spool, settings, key) if key else None

    def start(self) -> None:
        if self.uploader:
            self.uploader.start()

    def stop(self) -> None:
        if self.uploader:
            self.uploader.stop()

    def mark(self, alert: Alert) -> None:
        """Starts or ends the clip of an alert of one of the cameras (the sink calls this for each alert stored)."""
        recorder = self.recorders.get(alert.place.device or "")
        if recorder is not None:
            recorder.mark(alert)

    def counters(self) -> dict[str, float]:
        return {
            "clips_made": sum(r.clips for r in self.recorders.values()),
            "clips_pending": len(self.spool.pending()),
            "clips_uploaded": self.uploader.uploaded if self.uploader else 0,
            "clips_upload_failures": self.uploader.failures if self.uploader else 0,
            "clips_evicted": self.spool.evicted,
        }
