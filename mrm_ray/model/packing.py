"""Batches for the reward forward: groups (one prompt, K responses) packed into rows.

Trainers usually run chosen and rejected as two full sequences, so the prompt and its
images go through the model twice; with Qwen2.5-VL the image tokens are most of the
sequence, and a GRPO group of 8 responses would run them 8 times. The primitive here is a
*group*: one prompt (with its images) followed by K >= 1 responses, each response seeing
the prompt and itself only. A pair is a group of two (chosen first); a scored item is a
group of one. Rows hold one group each, or several back to back up to `row_tokens`:

    tokens    [ p p p p | a a | b b b | q q | c c c | . . ]   two groups, then padding
    segments  [ 1 1 1 1 | 2 2 | 3 3 3 | 1 1 | 2 2 2 | 0 0 ]   1 prompt, 2 + k response k, 0 pad
    groups    [ 0 0 0 0 | 0 0 | 0 0 0 | 1 1 | 1 1 1 |-1 -1]

The forward equals running each response alone with its prompt, by construction:
  * attention: per group, [prompt | response 1] is one causal segment and each further
    response's queries attend over [prompt | that response] (model/attention.py runs this
    without an L x L tensor; `dense_attention_mask` is the same rule as a 4D mask, the
    reference);
  * M-RoPE positions: the prompt's come from the model's own `get_rope_index`, and every
    response's restart where the prompt ends (`next position + offset`);
  * the vision tower sees each group's images and videos once (a video's features, its
    `video_grid_thw` and, for Qwen2.5-VL, `second_per_grid_ts` ride with its group as
    the images' do; M-RoPE's temporal axis comes from the same `get_rope_index`).
Collates return plain tensors (usable from `iter_torch_batches`), including the index
arithmetic the attention needs (`attention_plan`), computed on the host in NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

SEG_PAD, SEG_PROMPT = 0, 1  # response k (0-based) has segment id SEG_PROMPT + 1 + k
SEG_CHOSEN, SEG_REJECTED = 2, 3  # a pair is the group [chosen, rejected]
PADDING_SIDES = ("right", "left")


# ------------------------------------------------------------------------------ groups
def pair_group(pair: Mapping) -> dict:
    """An encoded pair (prompt features, `chosen_ids`, `rejected_ids`, `margin`?) as a group of two."""
    group = {k: v for k, v in pair.items() if k not in ("chosen_ids", "rejected_ids", "margin")}
    margin = pair.get("margin")
    return {**group, "responses": [pair["chosen_ids"], pair["rejected_ids"]], "pairs": [(0, 1)],
            "margins": [None if margin is None or np.isnan(margin) else float(margin)]}


def group_length(group: Mapping) -> int:
    return len(group["prompt_ids"]) + sum(len(r) for r in group["responses"])


def layout_rows(lengths: Sequence[int], row_tokens: int | None) -> list[list[int]]:
    """Group indices per row. Without a budget, one group per row; with one, first-fit by
    decreasing length into rows of at most `row_tokens` (a longer group gets a row alone)."""
    if row_tokens is None:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fit = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if fit is None:
            rows.append([i])
            room.append(row_tokens - lengths[i])
        else:
            rows[fit].append(i)
            room[fit] -= lengths[i]
    return rows


def balanced_parts(lengths: Sequence[int], parts: int) -> list[list[int]]:
    """Indices split into `parts` non-empty sets of nearly equal total length (longest first, each to
    the lightest set), each set in its original order. `parts` must not exceed the count."""
    if not 1 <= parts <= len(lengths):
        raise ValueError(f"cannot split {len(lengths)} groups into {parts} parts")
    bins: list[list[int]] = [[] for _ in range(parts)]
    totals = [0] * parts
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        b = min(range(parts), key=lambda b: (totals[b], len(bins[b])))
        bins[b].append(i)
        totals[b] += lengths[i]
    return [sorted(b) for b in bins]


# what a group's prompt may carry for the vision tower and M-RoPE, each concatenated over the batch's groups in
# placement order (images in order, videos in order): the processor's own outputs
VISION_FEATURES = (("pixel_values", torch.float32), ("image_grid_thw", torch.long),
                   ("pixel_values_videos", torch.float32), ("video_grid_thw", torch.long),
                   ("second_per_grid_ts", torch.float32))
VIDEO_FEATURES = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def _vision(features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    out = {}
    for key, dtype in VISION_FEATURES:
        parts = [f[key] for f in features if f.get(key) is not None and len(f[key])]
        if parts:
            out[key] = torch.as_tensor(np.concatenate(parts, axis=0), dtype=dtype)
    return out


def unshared(groups: Sequence[Mapping]) -> list[dict]:
    """Each response as a group of its own with a copy of its prompt (the two-sequence layout), in the same
    order, so rewards and the pairs' indices into them are unchanged (a group's pairs ride on its first)."""
    out = []
    for g in groups:
        for k, response in enumerate(g["responses"]):
            single = {key: v for key, v in g.items() if key not in ("responses", "pairs", "margins")}
            if k == 0 and "pairs" in g:
                single.update(pairs=g["pairs"], margins=g.get("margins"))
            out.append({**single, "responses": [response]})
    return out


def collate_groups(groups: Sequence[Mapping], *, pad_token_id: int, padding_side: str = "right",
                   row_tokens: int | None = None, share_prompt: bool = True) -> dict[str, torch.Tensor]:
    """Groups (`prompt_ids`, `prompt_mm_token_type_ids`, `responses`, images?, `pairs`?, `margins`?)
    -> one packed batch. Rewards come back per response in the groups' order (`reward_index`);
    `chosen_index` / `rejected_index` (P,) name the pairs to train on, into that order.

    `share_prompt=False` (a backbone whose layers carry state along the row, model/families.py): every
    response in its own row with its own copy of the prompt, right-padded, so nothing follows its reward
    token but padding."""
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if not share_prompt:
        groups, row_tokens, padding_side = unshared(groups), None, "right"
    for g in groups:
        if not g["responses"] or any(len(r) == 0 for r in g["responses"]):
            raise ValueError("every group needs at least one response, and no response may be empty")
    lengths = [group_length(g) for g in groups]
    rows = layout_rows(lengths, row_tokens)
    width = max(sum(lengths[i] for i in row) for row in rows)
    shape = (len(rows), width)
    ids = np.full(shape, pad_token_id, np.int64)
    mm, seg, offset = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    group_ids = np.full(shape, -1, np.int64)
    first_response = np.cumsum([0] + [len(g["responses"]) for g in groups])
    reward_index = np.zeros(first_response[-1], np.int64)
    placed: list[tuple[int, int]] = []  # (group, flat start) in placement order
    for r, row in enumerate(rows):
        col = 0 if padding_side == "right" else width - sum(lengths[i] for i in row)
        for i in row:
            g, start = groups[i], col
            lp = len(g["prompt_ids"])
            ids[r, col:col + lp] = g["prompt_ids"]
            mm[r, col:col + lp] = g["prompt_mm_token_type_ids"]
            seg[r, col:col + lp] = SEG_PROMPT
            offset[r, col:col + lp] = np.arange(lp)
            col += lp
            for k, resp in enumerate(g["responses"]):
                ids[r, col:col + len(resp)] = resp
                seg[r, col:col + len(resp)] = SEG_PROMPT + 1 + k
                offset[r, col:col + len(resp)] = np.arange(len(resp))
                col += len(resp)
                reward_index[first_response[i] + k] = r * width + col - 1
            group_ids[r, start:col] = len(placed)
            placed.append((i, r * width + start))
    chosen, rejected, margins = [], [], []
    for i, g in enumerate(groups):
        for (a, b), m in zip(g.get("pairs", ()), g.get("margins") or [None] * len(g.get("pairs", ()))):
            chosen.append(first_response[i] + a)
            rejected.append(first_response[i] + b)
            margins.append(m)
    response_lengths = np.array([len(r) for g in groups for r in g["responses"]], np.int64)
    batch = {
        "input_ids": torch.from_numpy(ids), "mm_token_type_ids": torch.from_numpy(mm),
        "segment_ids": torch.from_numpy(seg), "group_ids": torch.from_numpy(group_ids),
        "token_offset": torch.from_numpy(offset), "reward_index": torch.from_numpy(reward_index),
        "response_lengths": torch.from_numpy(response_lengths),
        **attention_plan([(groups[i], start) for i, start in placed]),
        **_vision([groups[i] for i, _ in placed]),
    }
    if chosen:
        batch["chosen_index"] = torch.tensor(chosen, dtype=torch.long)
        batch["rejected_index"] = torch.tensor(rejected, dtype=torch.long)
        batch["chosen_lengths"] = batch["response_lengths"][batch["chosen_index"]]
        batch["rejected_lengths"] = batch["response_lengths"][batch["rejected_index"]]
        if any(m is not None for m in margins):
            batch["margin"] = torch.tensor([m or 0.0 for m in margins], dtype=torch.float32)
    return batch


def attention_plan(placed: Sequence[tuple[Mapping, int]]) -> dict[str, torch.Tensor]:
    """Variable-length attention segments for groups at flat token offsets.

    Per group: [prompt | response 1] attends to itself causally; response k > 1 is a
    segment whose queries are its tokens and whose keys are [prompt | response k], the
    queries being the keys' last tokens (causal, aligned bottom-right as flash attention
    does). Every real token is a query exactly once. Returns flat token indices of the
    queries and keys of all segments, back to back, their cumulative lengths (S + 1,)
    int32 and the longest query and key segment."""
    q_parts, k_parts, q_lens, k_lens = [], [], [], []
    for g, start in placed:
        lp = len(g["prompt_ids"])
        prompt = np.arange(start, start + lp)
        col = start + lp
        for k, resp in enumerate(g["responses"]):
            own = np.arange(col, col + len(resp))
            col += len(resp)
            keys = np.concatenate([prompt, own])
            q_parts.append(keys if k == 0 else own)
            k_parts.append(keys)
            q_lens.append(len(q_parts[-1]))
            k_lens.append(len(keys))
    return {
        "attn_q_index": torch.from_numpy(np.concatenate(q_parts)),
        "attn_k_index": torch.from_numpy(np.concatenate(k_parts)),
        "attn_cu_q": torch.from_numpy(np.cumsum([0] + q_lens).astype(np.int32)),
        "attn_cu_k": torch.from_numpy(np.cumsum([0] + k_lens).astype(np.int32)),
        "attn_max": torch.tensor([max(q_lens), max(k_lens)], dtype=torch.long),
    }


def dense_attention_mask(segment_ids: torch.Tensor, group_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same attention as a 4D additive mask (B, 1, L, L), 0 where allowed: causal, within
    a group, a response sees the prompt and itself. The test reference; quadratic in L.
    Padding attends to itself only, so softmax never sees an all-masked row."""
    seq_len = segment_ids.shape[1]
    idx = torch.arange(seq_len, device=segment_ids.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key j <= query i
    q, k = segment_ids[:, :, None], segment_ids[:, None, :]
    same_group = group_ids[:, :, None] == group_ids[:, None, :]
    allowed = causal[None] & same_group & (q != SEG_PAD) & ((k == SEG_PROMPT) | (k == q))
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=segment_ids.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


# ---------------------------------------------------------------- two-sequence reference
def _pad_rows(rows: Sequence[np.ndarray], value: int, side: str) -> torch.Tensor:
    if side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {side!r}")
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        row_t = torch.as_tensor(np.asarray(row), dtype=torch.long)
        if side == "right":
            out[i, : len(row)] = row_t
        else:
            out[i, width - len(row):] = row_t
    return out


def collate_sequences(items: Sequence[Mapping], *, pad_token_id: int,
                      padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Items with prompt features and `response_ids` -> one padded row each (the reference layout)."""
    ids = [np.concatenate([it["prompt_ids"], it["response_ids"]]) for it in items]
    mm = [np.concatenate([it["prompt_mm_token_type_ids"], np.zeros(len(it["response_ids"]), np.int64)]) for it in items]
    ones = [np.ones(len(r), np.int64) for r in ids]
    return {
        "input_ids": _pad_rows(ids, pad_token_id, padding_side),
        "attention_mask": _pad_rows(ones, 0, padding_side),
        "mm_token_type_ids": _pad_rows(mm, 0, padding_side),
        "response_lengths": torch.tensor([len(it["response_ids"]) for it in items], dtype=torch.long),
        **_vision(items),
    }


def collate_two_sequence(pairs: Sequence[Mapping], *, pad_token_id: int,
                         padding_side: str = "right") -> dict[str, torch.Tensor]:
    """B pairs -> 2B rows: the B prompt+chosen rows, then the B prompt+rejected rows.

    Images are repeated for the second half, so the vision tower runs twice per pair.
    """
    chosen = [{**p, "response_ids": p["chosen_ids"]} for p in pairs]
    rejected = [{**p, "response_ids": p["rejected_ids"]} for p in pairs]
    batch = collate_sequences(chosen + rejected, pad_token_id=pad_token_id, padding_side=padding_side)
    lengths = batch.pop("response_lengths")
    n = len(pairs)
    out = {**batch, "chosen_lengths": lengths[:n], "rejected_lengths": lengths[n:]}
    if any(p.get("margin") is not None and not np.isnan(p["margin"]) for p in pairs):
        out["margin"] = torch.tensor([float(p.get("margin") or 0.0) for p in pairs], dtype=torch.float32)
    return out


def collate_packed(pairs: Sequence[Mapping], *, pad_token_id: int, padding_side: str = "right",
                   row_tokens: int | None = None, share_prompt: bool = True) -> dict[str, torch.Tensor]:
    """B encoded pairs -> packed rows of `[prompt | chosen | rejected]` groups (`share_prompt=False`: each
    response in its own row, as `collate_groups`)."""
    return collate_groups([pair_group(p) for p in pairs], pad_token_id=pad_token_id, padding_side=padding_side,
                          row_tokens=row_tokens, share_prompt=share_prompt)


def last_index(selected: torch.Tensor) -> torch.Tensor:
    """selected (B, L) bool -> (B,) index of the last True in each row (the reward token)."""
    if not bool(selected.any(dim=1).all()):
        raise ValueError("a row has no token to read the reward at (empty response?)")
    positions = torch.arange(selected.shape[1], device=selected.device)
    return torch.where(selected, positions, -1).max(dim=1).values
