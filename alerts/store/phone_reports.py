"""Reports from a phone: reporters' links, which reports each reporter made, their further photos, desks' replies.

A link carries a token that speaks as the reporter's key (``alerts.auth.LOOKUP_SQL`` finds either), stored only
as its SHA-256 hash and revocable by itself; removing the reporter (``alerts.store.reporters``) ends its links
with its key. A report is written by ``alerts.api.reports``; ``record_report`` adds, in the same transaction,
whose it was and the photos after the first (the first is the event's snapshot). What a reporter reads back
is only their own: ``own_reports`` selects by the reporter's id, never by anything the request names.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal
from uuid import UUID, uuid4

from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from alerts.auth import Principal, hash_key
from alerts.store.database import RECORD_CHANGES
from alerts.store.queries import scoped_where
from alerts.store.rows import rows_as

LINK_PREFIX = "pl_"
REPLY = "reply"  # the action of a desk's reply in an alert's audit trail
ReporterStatus = Literal["received", "acknowledged", "closed"]  # new; acknowledged; resolved or a false alarm


class ReporterLink(BaseModel):
    id: UUID = Field(description="The link's id (revoke it by this).")
    reporter_id: UUID = Field(description="The reporter it speaks for.")
    created_by: str = Field(description="Who made it.")
    created_at: datetime = Field(description="When.")
    revoked_at: datetime | None = Field(description="When it was revoked, if it was.")


class Reply(BaseModel):
    at: datetime = Field(description="When the desk replied.")
    by: str = Field(description="Who replied: the officer's name, or the desk key's holder.")
    text: str = Field(description="The reply.")


class OwnReport(BaseModel):
    alert_id: UUID = Field(description="The alert the report raised.")
    at: datetime = Field(description="When it was sent.")
    category: str = Field(description="What the reporter chose, e.g. suspicious_person.")
    text: str = Field(description="What the reporter wrote.")
    building: str = Field(description="Where within the site, if the reporter said.")
    photos: int = Field(description="How many photos came with it.")
    status: ReporterStatus = Field(description="received, acknowledged (someone is on it) or closed.")
    replies: list[Reply] = Field(description="What the desk replied, oldest first.")


async def reporter_within(conn: AsyncConnection, who: Principal, reporter_id: UUID) -> bool:
    """Whether the reporter is registered within the caller's places."""
    where, params = scoped_where(who, None, "r")
    sql = f"SELECT 1 FROM reporters r WHERE r.id = %s AND {where}"
    return await (await conn.execute(sql, [reporter_id, *params])).fetchone() is not None


async def create_link(conn: AsyncConnection, reporter_id: UUID, created_by: str) -> tuple[UUID, str]:
    """A new link for the reporter: (its id, its token, shown once and stored only hashed)."""
    link_id, token = uuid4(), LINK_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO reporter_links (id, reporter_id, token_hash, created_by) VALUES (%s, %s, %s, %s)",
        (link_id, reporter_id, hash_key(token), created_by),
    )
    return link_id, token


async def list_links(conn: AsyncConnection, reporter_id: UUID) -> list[ReporterLink]:
    """The reporter's links, newest first, revoked ones too."""
    sql = (
        f"SELECT {', '.join(ReporterLink.model_fields)} FROM reporter_links WHERE reporter_id = %s"
        " ORDER BY created_at DESC"
    )
    return rows_as(ReporterLink, await (await conn.execute(sql, (reporter_id,))).fetchall())


async def revoke_link(conn: AsyncConnection, who: Principal, link_id: UUID) -> bool:
    """Revokes a link of a reporter within the caller's places; whether there was such a link."""
    where, params = scoped_where(who, None, "r")
    sql = (
        "UPDATE reporter_links l SET revoked_at = coalesce(l.revoked_at, now()) FROM reporters r"
        f" WHERE l.id = %s AND r.id = l.reporter_id AND {where} RETURNING l.id"
    )
    return await (await conn.execute(sql, [link_id, *params])).fetchone() is not None


async def record_report(
    conn: AsyncConnection, alert_id: UUID, reporter_id: UUID, event_id: UUID, more_photos: list[bytes]
) -> None:
    """Whose report the alert is, and its photos after the first, in the caller's transaction."""
    await conn.execute("INSERT INTO reporter_reports (alert_id, reporter_id) VALUES (%s, %s)", (alert_id, reporter_id))
    for n, photo in enumerate(more_photos, start=2):
        await conn.execute(
            "INSERT INTO report_photos (event_id, n, alert_id, photo) VALUES (%s, %s, %s, %s)",
            (event_id, n, alert_id, photo),
        )


_OWN_SQL = f"""
SELECT a.id, r.at, coalesce(a.attributes->>'category', 'other'), coalesce(a.attributes->>'text', ''),
    coalesce(a.attributes->>'building', ''), coalesce(jsonb_array_length(a.attributes->'photos'), 0),
    CASE a.status WHEN 'new' THEN 'received' WHEN 'acknowledged' THEN 'acknowledged' ELSE 'closed' END,
    coalesce((SELECT json_agg(json_build_object('at', h.at, 'by', h.actor, 'text', h.note) ORDER BY h.at, h.id)
              FROM alert_history h WHERE h.alert_id = a.id AND h.action = '{REPLY}'), '[]'::json)
FROM reporter_reports r JOIN alerts a ON a.id = r.alert_id
WHERE r.reporter_id = %s ORDER BY r.at DESC LIMIT %s"""


async def own_reports(conn: AsyncConnection, reporter_id: UUID, newest: int = 50) -> list[OwnReport]:
    """The reporter's ``newest`` reports, newest first, with what became of each."""
    rows = await (await conn.execute(_OWN_SQL, (reporter_id, newest))).fetchall()
    return rows_as(OwnReport, rows)


async def is_report(conn: AsyncConnection, alert_id: UUID) -> bool:
    """Whether the alert was raised by a registered reporter's report."""
    found = await conn.execute("SELECT 1 FROM reporter_reports WHERE alert_id = %s", (alert_id,))
    return await found.fetchone() is not None


async def add_reply(conn: AsyncConnection, alert_id: UUID, who: Principal, text: str) -> Reply:
    """A desk's reply to a report: in the alert's audit trail under the person's (or key's) name, and a ``replied``
    change for the streams, in the caller's transaction; the alert's status stays as it is."""
    locked = await conn.execute("SELECT status FROM alerts WHERE id = %s FOR NO KEY UPDATE", (alert_id,))
    row = await locked.fetchone()
    assert row is not None, "a reply is to an alert the caller has just seen"
    added = await conn.execute(
        "INSERT INTO alert_history (alert_id, actor, action, from_status, to_status, note, person_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING at",
        (alert_id, who.name, REPLY, row[0], row[0], text, who.person_id),
    )
    stored = await added.fetchone()
    assert stored is not None, "an INSERT ... RETURNING returns its row"
    await conn.execute(RECORD_CHANGES, ([alert_id], ["replied"]))
    return Reply(at=stored[0], by=who.name, text=text)
