"""A shop's phone page: ``/shop#<key>``, one offline file (``shop.html``), where the shop on duty sees its weeks and
checks in its patrols.

The link is made when the community officer registers the shop (or gives it a new key): ``<public URL>/shop#<key>``,
shown once with its QR code. The key rides in the fragment, which a browser never sends, so no access log, proxy or
Referer sees it; the page sends it as ``Authorization: Bearer`` to ``GET /api/v1/shops/me`` and
``POST /api/v1/shops/checkins``. The page keeps the key in the phone browser's storage and drops it from the address
bar, so a plain ``<public URL>/shop`` (the link the weekly reminder carries, as keys are stored hashed and the
reminder goes to a group chat) opens the shop's page again on the phone that opened its link once.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from alerts.api.phone_page import phone_page
from alerts.notify.reminders import SHOP_PAGE

log = logging.getLogger(__name__)

router = APIRouter(tags=["shops"])

_HTML, _POLICY = phone_page("shop.html")


def shop_url(base: str, key: str) -> str:
    """The link a shop's phone opens: its key in the fragment, which the browser keeps to itself.

    >>> shop_url("https://alerts.example", "pk_abc")
    'https://alerts.example/shop#pk_abc'
    """
    return f"{base}{SHOP_PAGE}#{key}"


@router.get(SHOP_PAGE, include_in_schema=False)
async def shop_page() -> HTMLResponse:
    return HTMLResponse(_HTML, headers={"Content-Security-Policy": _POLICY})
