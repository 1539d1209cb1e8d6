"""Pictures: what kind of image a snapshot or an uploaded photo is, by its first bytes, not its name.

Example:
    >>> image_type(b"\\xff\\xd8\\xff\\xe0rest"), image_type(b"\\x89PNG\\r\\n\\x1a\\nrest"), image_type(b"GIF89a")
    ('image/jpeg', 'image/png', None)
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def image_type(data: bytes) -> str | None:
    """image/jpeg or image/png when the bytes start like one, else None."""
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)
