"""Image checks before any pixel reaches the processor (the data pipeline's and the server's).

Reads the header first (size, mode) so gigantic images are refused without decoding,
then decodes (JPEGs at reduced scale via `draft`) to catch corrupt or truncated files.
CMYK, palette, 16-bit and alpha images are converted to RGB by default (alpha composited over
white, as the processors' own RGB conversion does): real mixtures are full of charts and
screenshots in those modes. `image_modes="reject"` quarantines them instead, for data where a
transparent background must not silently become white.
"""

from __future__ import annotations

import io

from PIL import Image

from mrm_ray.config import DataConfig


class BadImage(ValueError):
    """An image that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

SUPPORTED_MODES = ("RGB", "L")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header, without decoding its pixels."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def check_image(data: bytes, config: DataConfig) -> tuple[bytes, int, int]:
    """(possibly converted bytes, width, height), or `BadImage` with the reason."""
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises several types for undecodable data
        raise BadImage(f"corrupt image: cannot identify ({type(exc).__name__})") from None
    width, height = image.size
    if min(width, height) < config.min_image_side:
        raise BadImage(f"image too small: {width}x{height} (min side {config.min_image_side})")
    if width * height > config.max_image_pixels:
        raise BadImage(f"image too large: {width}x{height} (max {config.max_image_pixels} pixels)")
    if max(width, height) / min(width, height) > config.max_aspect_ratio:
        raise BadImage(f"image aspect ratio: {width}x{height} exceeds {config.max_aspect_ratio:g}")
    mode = image.mode
    try:
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as exc:
        raise BadImage(f"corrupt image: {type(exc).__name__}: {str(exc)[:80]}") from None
    if mode in SUPPORTED_MODES:
        return data, width, height
    if config.image_modes == "reject":
        raise BadImage(f"unsupported image mode: {mode} (data.image_modes=reject; convert would make it RGB)")
    full = Image.open(io.BytesIO(data))
    if "A" in full.getbands() or full.mode == "P" and "transparency" in full.info:
        full = full.convert("RGBA")
        background = Image.new("RGB", full.size, (255, 255, 255))
        background.paste(full, mask=full.getchannel("A"))
        rgb = background
    elif full.mode.startswith("I;16") or full.mode in ("I", "F"):
        rgb = full.point(lambda v: v / 256).convert("L").convert("RGB")
    else:
        rgb = full.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue(), width, height
