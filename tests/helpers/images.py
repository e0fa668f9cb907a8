"""Small encoded images for request payloads."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png(colour=(200, 30, 30), size=(56, 56), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode != "L" else 128).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)


def huge_png(side: int = 5000) -> bytes:
    """A tiny file whose header claims side x side pixels (zeros compress well)."""
    return png(colour=(0, 0, 0), size=(side, side))
