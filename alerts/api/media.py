"""Pictures: what kind of image a snapshot or an uploaded photo is, by its first bytes, not its name; and a
citizen's photo made safe to keep (``clean_photo``).

A phone's photo carries EXIF: the time, the phone, and often where it was taken (GPS). Nothing of it is kept: the
photo is decoded, turned upright by its EXIF orientation, shrunk to ``PHOTO_MAX_PX`` on its longer side and
written again as a JPEG with no metadata, at most ``PHOTO_MAX_BYTES``. Decoding is the check that it is a
picture at all; its size in pixels is checked from its header first, so a small file that decodes to a huge
image (a decompression bomb) is refused before it is decoded.

Example:
    >>> image_type(b"\\xff\\xd8\\xff\\xe0rest"), image_type(b"\\x89PNG\\r\\n\\x1a\\nrest"), image_type(b"GIF89a")
    ('image/jpeg', 'image/png', None)
    >>> from io import BytesIO
    >>> big = BytesIO(); Image.new("RGB", (4000, 3000), "white").save(big, "PNG")
    >>> Image.open(BytesIO(clean_photo(big.getvalue()))).size
    (1600, 1200)
    >>> clean_photo(b"GIF89a not really")
    Traceback (most recent call last):
    ...
    ValueError: not a JPEG, PNG or WebP picture
"""

from __future__ import annotations

import logging
from io import BytesIO

from PIL import Image, ImageOps

log = logging.getLogger(__name__)

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))
PHOTO_MAX_PX = 1600  # the longer side of a kept photo: enough to read a number plate across a street
PHOTO_MAX_BYTES = 600_000  # a kept photo, at most
PHOTO_MAX_PIXELS = 64_000_000  # an upload larger than this is refused undecoded (a 48-megapixel phone passes)
_FORMATS = ("JPEG", "PNG", "WEBP")  # what phones' browsers send (a JPEG with a second picture, MPO, opens as JPEG)


def image_type(data: bytes) -> str | None:
    """image/jpeg or image/png when the bytes start like one, else None."""
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)


def _decoded(data: bytes) -> Image.Image:
    """The picture, upright and in RGB (transparency over white); ValueError when it is none of ``_FORMATS``."""
    try:
        with Image.open(BytesIO(data), formats=_FORMATS) as opened:
            if opened.width * opened.height > PHOTO_MAX_PIXELS:
                raise ValueError(f"larger than {PHOTO_MAX_PIXELS} pixels")
            upright = ImageOps.exif_transpose(opened)
    except ValueError:
        raise
    except Exception as exc:
        # Not only OSError: a decoder, or an opener another library registered in this process (ultralytics wraps
        # Image.open and imports a HEIF plugin on failure), may raise anything on bytes that are no picture.
        raise ValueError("not a JPEG, PNG or WebP picture") from exc
    if upright.mode in ("RGB", "L"):
        return upright.convert("RGB")
    rgba = upright.convert("RGBA")
    white = Image.new("RGB", rgba.size, "white")
    white.paste(rgba, mask=rgba.getchannel("A"))
    return white


def clean_photo(data: bytes) -> bytes:
    """The photo as a JPEG without metadata, at most ``PHOTO_MAX_PX`` wide and high and ``PHOTO_MAX_BYTES`` long."""
    picture = _decoded(data)
    picture.thumbnail((PHOTO_MAX_PX, PHOTO_MAX_PX))
    picture.info = {}  # what the decoder read (a comment, a colour profile) is not written again
    quality = 85
    while True:
        out = BytesIO()
        picture.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= PHOTO_MAX_BYTES:
            return out.getvalue()
        if quality > 45:
            quality -= 20
        else:
            picture = picture.resize((max(1, picture.width // 2), max(1, picture.height // 2)))
