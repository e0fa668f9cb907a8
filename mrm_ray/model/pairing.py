"""Batches for the pair forward: packed `[prompt | chosen | rejected]` or two sequences.

Trainers usually run chosen and rejected as two full sequences, so the prompt and its
image go through the model twice; with Qwen2.5-VL the image tokens are most of the
sequence. Packing puts one pair in one row:

    tokens    [ p p p p p p | c c c | r r r r ]   (pads at either end)
    segments  [ 1 1 1 1 1 1 | 2 2 2 | 3 3 3 3 ]   0 marks padding

and makes it equal to the two-sequence forward by construction:
  * an additive 4D mask: causal, pads invisible, rejected never sees chosen;
  * M-RoPE positions: the model's own `get_rope_index` is run twice, once over prompt+chosen
    and once over prompt+rejected, so rejected's positions restart where the prompt ends;
  * the vision tower sees each pair's images once.
Collates return plain tensors (usable from `iter_torch_batches`); mask and positions are
built next to the model because positions need its `get_rope_index`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

SEG_PAD, SEG_PROMPT, SEG_CHOSEN, SEG_REJECTED = 0, 1, 2, 3
PADDING_SIDES = ("right", "left")


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


def _vision(features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    pixels = [f["pixel_values"] for f in features if f.get("pixel_values") is not None and len(f["pixel_values"])]
    grids = [f["image_grid_thw"] for f in features if f.get("image_grid_thw") is not None and len(f["image_grid_thw"])]
    if not pixels:
        return {}
    return {
        "pixel_values": torch.as_tensor(np.concatenate(pixels, axis=0), dtype=torch.float32),
        "image_grid_thw": torch.as_tensor(np.concatenate(grids, axis=0), dtype=torch.long),
    }


def _margins(pairs: Sequence[Mapping]) -> dict[str, torch.Tensor]:
    if not any(p.get("margin") is not None for p in pairs):
        return {}
    return {"margin": torch.tensor([float(p.get("margin") or 0.0) for p in pairs], dtype=torch.float32)}


def collate_sequences(items: Sequence[Mapping], *, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Items with prompt features and `response_ids` -> one padded row each."""
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


def collate_two_sequence(pairs: Sequence[Mapping], *, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """B pairs -> 2B rows: the B prompt+chosen rows, then the B prompt+rejected rows.

    Images are repeated for the second half, so the vision tower runs twice per pair.
    """
    chosen = [{**p, "response_ids": p["chosen_ids"]} for p in pairs]
    rejected = [{**p, "response_ids": p["rejected_ids"]} for p in pairs]
    batch = collate_sequences(chosen + rejected, pad_token_id=pad_token_id, padding_side=padding_side)
    lengths = batch.pop("response_lengths")
    n = len(pairs)
    return {**batch, "chosen_lengths": lengths[:n], "rejected_lengths": lengths[n:], **_margins(pairs)}


def collate_packed(pairs: Sequence[Mapping], *, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """B pairs -> B packed rows `[prompt | chosen | rejected]` with segment ids."""
    ids, seg, mm = [], [], []
    for p in pairs:
        lp, lc, lr = len(p["prompt_ids"]), len(p["chosen_ids"]), len(p["rejected_ids"])
        ids.append(np.concatenate([p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]]))
        seg.append(np.repeat(np.array([SEG_PROMPT, SEG_CHOSEN, SEG_REJECTED]), [lp, lc, lr]))
        mm.append(np.concatenate([p["prompt_mm_token_type_ids"], np.zeros(lc + lr, np.int64)]))
    return {
        "input_ids": _pad_rows(ids, pad_token_id, padding_side),
        "segment_ids": _pad_rows(seg, SEG_PAD, padding_side),
        "mm_token_type_ids": _pad_rows(mm, 0, padding_side),
        "chosen_lengths": torch.tensor([len(p["chosen_ids"]) for p in pairs], dtype=torch.long),
        "rejected_lengths": torch.tensor([len(p["rejected_ids"]) for p in pairs], dtype=torch.long),
        **_vision(pairs),
        **_margins(pairs),
    }


def packed_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """segment_ids (B, L) -> additive float mask (B, 1, L, L): 0 where attention is allowed.

    Padding rows attend to themselves only, so softmax never sees an all-masked row.
    """
    seq_len = segment_ids.shape[1]
    idx = torch.arange(seq_len, device=segment_ids.device)
    causal = idx[None, :] <= idx[:, None]  # (L, L): key j <= query i
    q = segment_ids[:, :, None]
    k = segment_ids[:, None, :]
    allowed = causal[None] & (q != SEG_PAD) & (k != SEG_PAD) & ~((q == SEG_REJECTED) & (k == SEG_CHOSEN))
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=segment_ids.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def last_index(selected: torch.Tensor) -> torch.Tensor:
    """selected (B, L) bool -> (B,) index of the last True in each row (the reward token)."""
    if not bool(selected.any(dim=1).all()):
        raise ValueError("a row has no token to read the reward at (empty response?)")
    positions = torch.arange(selected.shape[1], device=selected.device)
    return torch.where(selected, positions, -1).max(dim=1).values
