"""The Qwen2.5-VL processor on the real RLAIF-V photos: grids consistent with their sizes."""

import math

import pytest
from PIL import Image

from mrm_ray.model.processor import load_processor

PATCH, MERGE = 14, 2


@pytest.mark.parametrize("max_pixels", [None, 28 * 28 * 64])
def test_image_grid_matches_image_sizes(shared_data, tiny_checkpoint, max_pixels):
    processor = load_processor(tiny_checkpoint, max_pixels=max_pixels)
    size = processor.image_processor.size
    lo, hi = size["shortest_edge"], size["longest_edge"]
    if max_pixels:
        assert hi == max_pixels
    paths = sorted((shared_data / "rlaif-v-sample" / "image").glob("*.jpg"))
    assert len(paths) == 10
    for path in paths:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        out = processor.image_processor(images=[image], return_tensors="np")
        t, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        assert t == 1  # a still image is one temporal patch (the frame is duplicated)
        assert gh % MERGE == 0 and gw % MERGE == 0, "grid must merge 2x2 into LLM tokens"
        assert out["pixel_values"].shape == (t * gh * gw, 3 * 2 * PATCH * PATCH)
        # resized area within the budget, within one 28px row/column of rounding
        area = gh * gw * PATCH * PATCH
        assert area <= hi and area >= lo, (path.name, area)
        # aspect ratio kept up to the 28px rounding of each side
        resized_h, resized_w = gh * PATCH, gw * PATCH
        assert abs(resized_h / resized_w - height / width) <= (height / width) * (
            PATCH * MERGE / min(resized_h, resized_w)) + 1e-9, path.name
        # the scale factor is the one that brings the photo into the budget
        scale = math.sqrt(area / (height * width))
        assert scale <= math.sqrt(hi / (height * width)) + 1e-9
