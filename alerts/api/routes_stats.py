"""Statistics for the page's chart: alarms, false alarms and time to take them up, per grid cell and day."""

from __future__ import annotations

import logging
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from alerts.api.http import Pool, Reader, Settings
from alerts.store.grid_stats import GridDay, GridStatsQuery, grid_days

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["statistics"])


@router.get("/stats/grids", summary="Per grid cell and day (the sites' days): alarms, false alarms, time to take up")
async def grids(pool: Pool, who: Reader, settings: Settings, q: Annotated[GridStatsQuery, Query()]) -> list[GridDay]:
    return await grid_days(pool, who, q, ZoneInfo(settings.timezone))
