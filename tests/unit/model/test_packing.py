"""Packed groups (one prompt, K responses, several per row) equal the two-sequence reference:
rewards and the gradient of every parameter, for each attention kernel; images run once."""

import io
import random
import zlib

import numpy as np
import pytest
import torch

from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.packing import (SEG_CHOSEN, SEG_PAD, SEG_PROMPT, SEG_REJECTED, collate_groups, collate_packed,
                                   collate_sequences, collate_two_sequence, dense_attention_mask, last_index,
                                   layout_rows)
from mrm_ray.model.reward_model import RewardModel

WORDS = "the a red blue shape image shows is there cat dog on table two three left right why".split()
KERNELS = ("sdpa", "dense")


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


def _random_prompt(rng, n_images):
    images = [_random_image(rng) for _ in range(n_images)]
    if n_images > 1 or rng.random() < 0.5:  # chat messages with images between text parts
        content = []
        for _ in range(n_images):
            content += [{"type": "text", "text": _text(rng, 0, 4)}, {"type": "image"}]
        content.append({"type": "text", "text": _text(rng, 1, 8)})
        return [{"role": "user", "content": content}], images
    return _text(rng, 1, 12), images


def _random_pair(encoder, rng, n_images):
    prompt, images = _random_prompt(rng, n_images)
    return encoder.encode_pair(prompt, images, _text(rng, 1, 30), _text(rng, 1, 30))


def _random_group(encoder, rng, n_images, k):
    prompt, images = _random_prompt(rng, n_images)
    return encoder.encode_group(prompt, images, [_text(rng, 1, 30) for _ in range(k)])


def _alone(groups):
    """Each response as its own item with its prompt: the two-sequence reference's rows, in order."""
    return [{**{k: v for k, v in g.items() if k != "responses"}, "response_ids": r}
            for g in groups for r in g["responses"]]


def _with_grads(model, batch, weights):
    model.zero_grad(set_to_none=True)
    rewards = model(**batch)
    (rewards * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return rewards.detach(), grads


@pytest.mark.parametrize("case", ["text_only", "one_image", "several_images", "mixed"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_groups_equal_each_response_alone_rewards_and_gradients(model, encoder, case, kernel):
    rng = random.Random(zlib.crc32(f"{case}{kernel}".encode()))
    model.packed_attention = kernel
    for trial in range(3):
        size = rng.randint(1, 4)
        counts = {"text_only": [0] * size, "one_image": [1] * size,
                  "several_images": [rng.randint(2, 3) for _ in range(size)],
                  "mixed": [rng.randint(0, 3) for _ in range(size)]}[case]
        groups = [_random_group(encoder, rng, n, rng.randint(1, 8)) for n in counts]
        side = rng.choice(["right", "left"])
        row_tokens = rng.choice([None, 400, 10_000])  # one group per row, a few per row, all in one row
        batch = collate_groups(groups, pad_token_id=encoder.pad_token_id, padding_side=side, row_tokens=row_tokens)
        reference = collate_sequences(_alone(groups), pad_token_id=encoder.pad_token_id, padding_side=side)
        weights = torch.randn(len(batch["reward_index"]), generator=torch.Generator().manual_seed(trial))
        got, got_grads = _with_grads(model, batch, weights)
        want, want_grads = _with_grads(model, reference, weights)
        where = f"{case} trial {trial} ({kernel}, {side}, rows of {row_tokens}: {batch['input_ids'].shape[0]})"
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=where)
        assert got_grads.keys() == want_grads.keys()
        for name in want_grads:
            torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-4, rtol=1e-3,
                                       msg=f"{where}: gradient of {name}")
    model.zero_grad(set_to_none=True)
    model.packed_attention = "auto"


@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_pairs_equal_two_sequence_and_name_the_pairs(model, encoder, kernel):
    rng = random.Random(5)
    model.packed_attention = kernel
    pairs = [_random_pair(encoder, rng, n) for n in (0, 1, 2, 1)]
    with torch.no_grad():
        pc, pr = model.forward_pairs(collate_packed(pairs, pad_token_id=encoder.pad_token_id, row_tokens=600))
        rc, rr = model.forward_pairs(collate_two_sequence(pairs, pad_token_id=encoder.pad_token_id,
                                                          padding_side="left"))
    model.packed_attention = "auto"
    torch.testing.assert_close(pc, rc, atol=1e-4, rtol=0)
    torch.testing.assert_close(pr, rr, atol=1e-4, rtol=0)


def test_a_leaky_plan_or_wrong_positions_would_be_caught(model, encoder):
    """The equality test can fail: a second response that also sees the first, or positions
    that do not restart where the prompt ends, change its reward."""
    rng = random.Random(3)
    groups = [_random_group(encoder, rng, 1, 2)]
    batch = collate_groups(groups, pad_token_id=encoder.pad_token_id)
    with torch.no_grad():
        good = model(**batch)
        leaky = dict(batch, segment_ids=torch.where(batch["segment_ids"] == SEG_CHOSEN, SEG_PROMPT,
                                                    batch["segment_ids"]))
        model.packed_attention = "dense"
        bad_mask = model(**leaky)
        model.packed_attention = "auto"
        shifted = dict(batch, token_offset=batch["token_offset"] + (batch["segment_ids"] == SEG_REJECTED) * 3)
        bad_positions = model(**shifted)
    assert (good[1] - bad_mask[1]).abs() > 1e-4
    assert (good[1] - bad_positions[1]).abs() > 1e-4
    torch.testing.assert_close(good[0], bad_positions[0], atol=1e-5, rtol=0)  # the first response untouched


def test_vision_tower_runs_once_per_group(model, encoder):
    rows = image_grounded_pairs(3, seed=0)
    groups = [encoder.encode_group(r["prompt"], r["images"], [r["chosen"], r["rejected"], "three", "four"])
              for r in rows]
    seen = []
    handle = model.backbone.visual.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            model(**collate_groups(groups, pad_token_id=encoder.pad_token_id, row_tokens=4096))
            model(**collate_sequences(_alone(groups), pad_token_id=encoder.pad_token_id))
    finally:
        handle.remove()
    patches = sum(len(g["pixel_values"]) for g in groups)
    assert seen == [patches, 4 * patches]  # packed first, then each response alone


def test_no_row_by_row_tensor_on_the_fast_path(model, encoder):
    """The sdpa kernel's mask is per segment: for a row of many groups it is far smaller than L x L."""
    from mrm_ray.model.attention import GroupPlan

    rng = random.Random(11)
    groups = [_random_group(encoder, rng, 0, 4) for _ in range(12)]
    batch = collate_groups(groups, pad_token_id=encoder.pad_token_id, row_tokens=100_000)
    plan = GroupPlan.build(batch, kernel="sdpa")
    length = batch["input_ids"].shape[1]
    masks = sum(0 if b.mask is None else b.mask.numel() for b in plan.buckets)
    assert batch["input_ids"].shape[0] == 1 and masks < length * length / 4


def test_dense_mask_by_hand():
    # group 0: prompt, response a (2 tokens), response b; group 1: prompt, response; one pad
    seg = torch.tensor([[SEG_PROMPT, SEG_PROMPT, SEG_CHOSEN, SEG_CHOSEN, SEG_REJECTED, SEG_PROMPT, SEG_CHOSEN,
                         SEG_PAD]])
    group = torch.tensor([[0, 0, 0, 0, 0, 1, 1, -1]])
    allowed = dense_attention_mask(seg, group, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # a sees the prompt
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],  # b sees the prompt, not a
        [0, 0, 0, 0, 0, 1, 0, 0],  # the next group sees nothing of the first
        [0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],  # padding sees only itself (no all-masked softmax row)
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
    assert dense_attention_mask(seg, group, torch.bfloat16).dtype == torch.bfloat16


def test_plan_segments_by_hand(encoder):
    group = {"prompt_ids": np.array([5, 6, 7]), "prompt_mm_token_type_ids": np.zeros(3, np.int64),
             "responses": [np.array([8, 9]), np.array([10]), np.array([11, 12])]}
    batch = collate_groups([group], pad_token_id=0, padding_side="left", row_tokens=None)
    assert batch["attn_q_index"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert batch["attn_k_index"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 5, 0, 1, 2, 6, 7]
    assert batch["attn_cu_q"].tolist() == [0, 5, 6, 8] and batch["attn_cu_k"].tolist() == [0, 5, 9, 14]
    assert batch["attn_max"].tolist() == [5, 5]
    assert batch["reward_index"].tolist() == [4, 5, 7] and batch["response_lengths"].tolist() == [2, 1, 2]


def test_layout_rows_fits_the_budget_and_keeps_every_group():
    lengths = [300, 120, 500, 80, 260, 700, 40]
    rows = layout_rows(lengths, 600)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 600 or len(row) == 1 for row in rows)
    assert len(rows) == 4  # 700 alone; 500+80; 300+260+40; 120
    assert layout_rows(lengths, None) == [[i] for i in range(len(lengths))]


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
    assert packed["chosen_index"].tolist() == [0, 2] and packed["rejected_index"].tolist() == [1, 3]


def test_a_group_without_responses_or_with_an_empty_one_is_refused(encoder):
    group = encoder.encode_group("q", [], ["a"])
    with pytest.raises(ValueError, match="at least one response"):
        collate_groups([{**group, "responses": []}], pad_token_id=0)
    with pytest.raises(ValueError, match="empty"):
        collate_groups([{**group, "responses": [np.zeros(0, np.int64)]}], pad_token_id=0)
    with pytest.raises(ValueError, match="at least one response"):
        encoder.encode_group("q", [], [])


def test_a_16k_token_row_trains_and_each_group_in_it_scores_as_alone(model):
    """Real lengths on the CPU path: 16 text groups of 1,024 tokens (a 512-token prompt, 8 responses of 64)
    in one row of 16,384 tokens, forward and backward; the last group, 15k tokens into the row, scores as
    it does alone."""
    rng = np.random.default_rng(0)
    groups = [{"prompt_ids": rng.integers(10, 600, 512), "prompt_mm_token_type_ids": np.zeros(512, np.int64),
               "responses": [rng.integers(10, 600, 64) for _ in range(8)]} for _ in range(16)]
    batch = collate_groups(groups, pad_token_id=0, row_tokens=16_384)
    assert batch["input_ids"].shape == (1, 16_384)
    model.zero_grad(set_to_none=True)
    rewards = model(**batch)
    rewards.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        alone = model(**collate_groups(groups[-1:], pad_token_id=0))
    torch.testing.assert_close(rewards.detach()[-8:], alone, atol=1e-4, rtol=0)


def test_a_ranked_group_trains_on_all_its_pairs_with_the_prompt_once(model, encoder):
    """UltraFeedback-style: one prompt, four ranked responses, all six pairs. The loss and gradients equal
    those of the six pairs packed one by one (each with its own copy of the prompt)."""
    from mrm_ray.model.loss import bradley_terry_loss

    rng = random.Random(21)
    prompt, images = _random_prompt(rng, 1)
    texts = [_text(rng, 2, 20) for _ in range(4)]
    group = encoder.encode_group(prompt, images, texts)
    ranked = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    grouped = collate_groups([{**group, "pairs": ranked}], pad_token_id=encoder.pad_token_id)
    pairs = [{**{k: v for k, v in group.items() if k != "responses"}, "chosen_ids": group["responses"][a],
              "rejected_ids": group["responses"][b]} for a, b in ranked]
    separate = collate_packed(pairs, pad_token_id=encoder.pad_token_id)
    assert grouped["input_ids"].numel() < separate["input_ids"].numel() / 3  # the prompt (and image) once

    def loss_and_grads(batch):
        model.zero_grad(set_to_none=True)
        loss = bradley_terry_loss(*model.forward_pairs(batch)).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (got, got_grads), (want, want_grads) = loss_and_grads(grouped), loss_and_grads(separate)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen (flash attention) kernel needs CUDA")
def test_the_flash_varlen_kernel_equals_the_sdpa_kernel_on_cuda(tiny_checkpoint, encoder):
    gpu = RewardModel.from_pretrained(tiny_checkpoint, dtype="bfloat16").cuda().eval()
    rng = random.Random(17)
    groups = [_random_group(encoder, rng, n, k) for n, k in ((0, 1), (1, 3), (2, 8), (0, 5))]
    batch = {k: v.cuda() for k, v in collate_groups(groups, pad_token_id=encoder.pad_token_id,
                                                    row_tokens=2048).items()}
    out = {}
    for kernel in ("varlen", "sdpa"):
        gpu.packed_attention = kernel
        with torch.no_grad():
            out[kernel] = gpu(**batch)
    torch.testing.assert_close(out["varlen"], out["sdpa"], atol=2e-2, rtol=2e-2)  # bf16
