"""Image checks: each bad kind gets its reason; `convert` turns odd modes into RGB."""

import io

import numpy as np
import pytest
from PIL import Image

from mrm_ray.config import DataConfig
from mrm_ray.model.images import check_image
from mrm_ray.model.images import BadImage

STRICT = DataConfig(max_image_pixels=1_000_000, image_modes="reject")
CONVERT = DataConfig(max_image_pixels=1_000_000)  # the default converts


def _png(image, fmt="PNG"):
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def test_good_rgb_and_grey_pass_unchanged():
    for mode in ("RGB", "L"):
        data = _png(Image.new(mode, (40, 30)))
        assert check_image(data, STRICT) == (data, 40, 30)


@pytest.mark.parametrize("data,reason", [
    (b"not an image", "corrupt image"),
    (_png(Image.new("RGB", (1, 1))), "image too small"),
    (_png(Image.new("RGB", (2000, 1000))), "image too large"),
    (_png(Image.new("RGB", (2000, 8))), "image aspect ratio"),
    (_png(Image.new("RGBA", (20, 20))), "unsupported image mode: RGBA"),
    (_png(Image.new("RGB", (20, 20)).convert("P")), "unsupported image mode: P"),
    (_png(Image.new("RGB", (20, 20)), "JPEG")[:200], "corrupt image"),
])
def test_bad_images_get_their_reason(data, reason):
    with pytest.raises(BadImage, match=reason):
        check_image(data, STRICT)


def test_odd_modes_are_converted_by_default():
    assert DataConfig().image_modes == "convert"


def test_convert_composites_alpha_on_white_and_keeps_size():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    data, w, h = check_image(_png(rgba), CONVERT)
    out = Image.open(io.BytesIO(data))
    assert out.mode == "RGB" and (w, h) == (10, 10) and out.getpixel((0, 0)) == (255, 255, 255)
    cmyk = check_image(_png(Image.new("RGB", (10, 10), "blue").convert("CMYK"), "JPEG"), CONVERT)[0]
    assert Image.open(io.BytesIO(cmyk)).mode == "RGB"
    deep = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    grey = Image.open(io.BytesIO(check_image(_png(deep), CONVERT)[0]))
    assert grey.mode == "RGB" and grey.getpixel((0, 0))[0] == 255
