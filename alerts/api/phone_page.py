"""The phone pages (``report.html``, ``shop.html``): each one offline file with the helpers they share
(``phone.js``) inlined where it says ``<!-- phone.js -->``, and its Content-Security-Policy.

Inlined, not linked: each page's CSP allows its inline scripts by hash (``page_policy``) and nothing else, and
the page stays one response a phone can keep.

Example:
    >>> html, policy = phone_page("shop.html")
    >>> "async function call(" in html and "<!-- phone.js -->" not in html
    True
    >>> policy.count("'sha256-") >= 3  # phone.js, the page's script, its style
    True
"""

from __future__ import annotations

from importlib import resources

from alerts.api.guard import page_policy

MARK = "<!-- phone.js -->"


def phone_page(name: str) -> tuple[str, str]:
    """The page ``name`` with the shared helpers in it, and its Content-Security-Policy."""
    files = resources.files("alerts.api")
    html = files.joinpath(name).read_text(encoding="utf-8")
    if MARK not in html:
        raise ValueError(f"{name} has no {MARK} for the shared helpers")
    helpers = files.joinpath("phone.js").read_text(encoding="utf-8")
    html = html.replace(MARK, f"<script>\n{helpers}</script>", 1)
    return html, page_policy(html)
