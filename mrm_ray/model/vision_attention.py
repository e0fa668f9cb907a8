"""Qwen2.5-VL's windowed vision attention in one SDPA call per layer, without flash-attn.

Without flash-attn, transformers runs the vision tower's attention window by window: a
644 px image has 36 windows of 64 patches, so each of the 28 windowed layers makes 36
small SDPA calls per image (and a host sync), forward, recomputed and backward. On a GPU
that is launch-bound: thousands of tiny kernels per pair. `padded_varlen_sdpa` receives the
windows' boundaries (`cu_seqlens`, as flash-attn's varlen kernel would), gathers them into
one zero-padded batch (windows, heads, longest window, dim), runs one SDPA call with the
padding masked out, and scatters the result back: the same attention, one call per layer.

It is registered with transformers' `AttentionInterface` and selected for the vision tower
only (the text model keeps SDPA with our packed 4D mask). Its name contains "flash" because
that is how the Qwen2.5-VL vision attention decides to hand over `cu_seqlens` instead of
splitting; nothing of flash-attn is imported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "flash_varlen_padded_sdpa"


def _layout(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(token index per padded slot (W, Lmax), valid (W, Lmax), Lmax) for sequences at `cu_seqlens`."""
    starts, lengths = cu_seqlens[:-1], cu_seqlens[1:] - cu_seqlens[:-1]
    longest = int(lengths.max())
    offsets = torch.arange(longest, device=cu_seqlens.device)
    valid = offsets[None, :] < lengths[:, None]
    index = torch.where(valid, starts[:, None] + offsets[None, :], 0)
    return index, valid, longest


def padded_varlen_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None = None, scaling: float | None = None,
                       dropout: float = 0.0, cu_seq_lens_q: torch.Tensor | None = None,
                       cu_seq_lens_k: torch.Tensor | None = None, **_) -> tuple[torch.Tensor, None]:
    """query/key/value (1, heads, tokens, dim), sequences at `cu_seq_lens_q` -> (1, tokens, heads, dim)."""
    if cu_seq_lens_q is None or (cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_q, cu_seq_lens_k)):
        raise ValueError(f"{NAME} needs the same cu_seq_lens for queries and keys (vision self-attention)")
    index, valid, _ = _layout(cu_seq_lens_q.long())
    flat = index.reshape(-1)

    def gather(t: torch.Tensor) -> torch.Tensor:  # (1, H, N, D) -> (W, H, Lmax, D)
        h, d = t.shape[1], t.shape[3]
        return t[0].index_select(1, flat).reshape(h, *index.shape, d).transpose(0, 1)

    mask = None
    if not bool(valid.all()):  # equal lengths need no mask, which lets SDPA pick its fastest kernel
        mask = torch.zeros(valid.shape, dtype=query.dtype, device=query.device)
        mask.masked_fill_(~valid, torch.finfo(query.dtype).min)
        mask = mask[:, None, None, :]
    out = F.scaled_dot_product_attention(gather(query), gather(key), gather(value), attn_mask=mask,
                                         dropout_p=dropout, scale=scaling)  # (W, H, Lmax, D)
    out = out.transpose(1, 2)[valid]  # (tokens in window order, H, D) = the original token order
    return out[None], None


def register() -> str:
    """Make the implementation known to transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, padded_varlen_sdpa)
    return NAME


def use_for_vision_tower(backbone) -> None:
    """Switch a loaded Qwen2.5-VL backbone's vision tower to the one-call attention."""
    register()
    backbone.visual.config._attn_implementation = NAME
