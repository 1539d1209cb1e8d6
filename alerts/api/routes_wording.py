"""The words of the page in Chinese and English (``alerts.notify.wording``'s tables) and the sites' time zone:
the page builds each alert's title in the person's language from its type and attributes."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from pydantic import BaseModel, Field

from alerts.api.http import Settings, Who
from alerts.notify import wording
from alerts.store.people import Language

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["wording"])


class Wording(BaseModel):
    timezone: str = Field(description="The sites' time zone, in which the page shows times.")
    languages: list[Language] = Field(description="The languages, in the order of each pair of the tables.")
    tables: dict[str, dict[str, list[str]]] = Field(
        description="kinds, types, severities, changes, classes, directions, titles (templates whose {name} "
        "fields are the alert's attributes) and the generic title: each key's [Chinese, English] words."
    )


@router.get("/wording", summary="Chinese and English words for alerts, and the sites' time zone")
async def get_wording(settings: Settings, who: Who) -> Wording:
    tables = {name: {key: list(pair) for key, pair in table.items()} for name, table in wording.tables().items()}
    return Wording(timezone=settings.timezone, languages=list(wording.LANGUAGES), tables=tables)
