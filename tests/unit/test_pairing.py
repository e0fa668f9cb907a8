"""The packed pair forward equals the two-sequence reference, and runs images once."""

import io
import random
import zlib

import numpy as np
import pytest
import torch

from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.pairing import (SEG_CHOSEN, SEG_PAD, SEG_PROMPT, SEG_REJECTED, collate_packed,
                                   collate_two_sequence, last_index, packed_attention_mask)
from mrm_ray.model.reward_model import RewardModel

WORDS = "the a red blue shape image shows is there cat dog on table two three left right why".split()


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return RewardModel.from_pretrained(tiny_checkpoint).eval()


def _random_image(rng: random.Random) -> bytes:
    from PIL import Image

    w, h = rng.randint(20, 300), rng.randint(20, 300)
    pixels = np.random.default_rng(rng.randint(0, 10**6)).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _random_pair(encoder, rng, n_images):
    images = [_random_image(rng) for _ in range(n_images)]
    if n_images > 1 or rng.random() < 0.5:  # chat messages with images between text parts
        content = []
        for _ in range(n_images):
            content += [{"type": "text", "text": _text(rng, 0, 4)}, {"type": "image"}]
        content.append({"type": "text", "text": _text(rng, 1, 8)})
        prompt = [{"role": "user", "content": content}]
    else:
        prompt = _text(rng, 1, 12)
    return encoder.encode_pair(prompt, images, _text(rng, 1, 30), _text(rng, 1, 30))


def _both(model, pairs, pad, side):
    with torch.no_grad():
        packed = model.forward_pairs(collate_packed(pairs, pad_token_id=pad, padding_side=side))
        reference = model.forward_pairs(collate_two_sequence(pairs, pad_token_id=pad, padding_side=side))
    return packed, reference


@pytest.mark.parametrize("case", ["text_only", "one_image", "several_images", "mixed"])
def test_packed_equals_two_sequence_over_random_shapes(model, encoder, case):
    rng = random.Random(zlib.crc32(case.encode()))
    for trial in range(6):
        size = rng.randint(1, 4)
        counts = {"text_only": [0] * size, "one_image": [1] * size,
                  "several_images": [rng.randint(2, 3) for _ in range(size)],
                  "mixed": [rng.randint(0, 2) for _ in range(size)]}[case]
        pairs = [_random_pair(encoder, rng, n) for n in counts]
        side = rng.choice(["right", "left"])
        (pc, pr), (rc, rr) = _both(model, pairs, encoder.pad_token_id, side)
        assert pc.dtype == torch.float32
        torch.testing.assert_close(pc, rc, atol=1e-4, rtol=0, msg=f"{case} trial {trial} chosen ({side})")
        torch.testing.assert_close(pr, rr, atol=1e-4, rtol=0, msg=f"{case} trial {trial} rejected ({side})")


def test_pair_rewards_do_not_depend_on_batch_company(model, encoder):
    rng = random.Random(7)
    pairs = [_random_pair(encoder, rng, n) for n in (1, 0, 2)]
    alone = [_both(model, [p], encoder.pad_token_id, "right")[0] for p in pairs]
    (bc, br), _ = _both(model, pairs, encoder.pad_token_id, "left")
    torch.testing.assert_close(bc, torch.cat([a[0] for a in alone]), atol=1e-4, rtol=0)
    torch.testing.assert_close(br, torch.cat([a[1] for a in alone]), atol=1e-4, rtol=0)


def test_a_leaky_mask_or_wrong_positions_would_be_caught(model, encoder, monkeypatch):
    """The equality test can fail: letting rejected see chosen changes its reward."""
    import mrm_ray.model.reward_model as rm

    rng = random.Random(3)
    pairs = [_random_pair(encoder, rng, 1) for _ in range(2)]
    (_, good), _ = _both(model, pairs, encoder.pad_token_id, "right")

    def leaky(segment_ids, dtype):
        return packed_attention_mask(torch.where(segment_ids == SEG_CHOSEN, SEG_PROMPT, segment_ids), dtype)

    monkeypatch.setattr(rm, "packed_attention_mask", leaky)
    (_, bad), _ = _both(model, pairs, encoder.pad_token_id, "right")
    assert (good - bad).abs().max() > 1e-4


def test_vision_tower_runs_once_per_pair(model, encoder):
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(3, seed=0)]
    seen = []
    handle = model.backbone.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        _both(model, pairs, encoder.pad_token_id, "right")
    finally:
        handle.remove()
    patches = sum(len(p["pixel_values"]) for p in pairs)
    assert seen == [patches, 2 * patches]  # packed first, then the two-sequence reference


def test_packed_mask_by_hand():
    seg = torch.tensor([[SEG_PROMPT, SEG_PROMPT, SEG_CHOSEN, SEG_REJECTED, SEG_REJECTED, SEG_PAD]])
    allowed = packed_attention_mask(seg, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],  # chosen sees the prompt
        [1, 1, 0, 1, 0, 0],  # rejected sees the prompt, not chosen
        [1, 1, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself (no all-masked softmax row)
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    assert packed_attention_mask(seg, torch.bfloat16).dtype == torch.bfloat16


def test_last_index_and_empty_row():
    sel = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]], dtype=torch.bool)
    assert last_index(sel).tolist() == [1, 3, 1]
    with pytest.raises(ValueError):
        last_index(torch.zeros(1, 3, dtype=torch.bool))


def test_collate_layouts(encoder):
    pairs = [encoder.encode_pair("q", [], "a", "bb b"), {**encoder.encode_pair("longer question here", [], "x", "y"),
                                                          "margin": 0.5}]
    packed = collate_packed(pairs, pad_token_id=encoder.pad_token_id, padding_side="left")
    two = collate_two_sequence(pairs, pad_token_id=encoder.pad_token_id)
    assert packed["input_ids"].shape[0] == 2 and two["input_ids"].shape[0] == 4
    assert packed["margin"].tolist() == [0.0, 0.5]
    lengths = [len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs]
    assert (packed["segment_ids"] != SEG_PAD).sum(1).tolist() == lengths
    assert packed["segment_ids"][0, 0] == SEG_PAD  # left padding puts pads first
    assert packed["chosen_lengths"].tolist() == [len(p["chosen_ids"]) for p in pairs]
