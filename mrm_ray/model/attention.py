"""Attention without L x L tensors: packed groups in the text model, windows in the vision tower.

Text model (packed groups, model/packing.py). A row holds groups of one prompt and K
responses; each response must see its prompt and itself only. `grouped_attention` runs
that as variable-length segments from `attention_plan`: per group, [prompt | response 1]
attends causally to itself and each further response's queries attend over
[prompt | that response]. Two kernels compute it:
  * "varlen": `torch.nn.attention.varlen.varlen_attn`, flash attention for packed
    sequences (CUDA, half precision, backward included): no padding at all;
  * "sdpa" (any device; it trains on CPU): [prompt | response 1] segments of one length
    in one call of SDPA's own causal kernel; the other segments bucketed by size, each
    bucket one zero-padded SDPA call with a boolean mask of the segments' own sizes.
    Memory grows with the segments, not with the row.
Both are registered with transformers' `AttentionInterface` under `GROUPED`, selected for
the language model; without a plan (the two-sequence reference, the dense reference) the
call goes to the backbone's own implementation with the 4D mask it is given.

Vision tower. Without flash-attn, transformers runs Qwen2.5-VL's windowed vision attention
window by window: a 644 px image has 36 windows of 64 patches, so each of the 28 windowed
layers makes 36 small SDPA calls per image (and a host sync), forward, recomputed and
backward. On a GPU that is launch-bound: thousands of tiny kernels per pair.
`padded_varlen_sdpa` receives the windows' boundaries (`cu_seqlens`, as flash-attn's
varlen kernel would), gathers them into one zero-padded batch (windows, heads, longest
window, dim), runs one SDPA call with the padding masked out, and scatters the result
back: the same attention, one call per layer. Its name contains "flash" because that is
how the Qwen2.5-VL vision attention decides to hand over `cu_seqlens` instead of
splitting; nothing of flash-attn is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """Make the vision implementation known to transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, padded_varlen_sdpa)
    return NAME


def use_for_vision_tower(backbone) -> None:
    """Switch a loaded backbone's vision tower to the one-call attention (the Qwen vision towers hand
    `cu_seqlens` to any implementation whose name says flash)."""
    register()
    backbone.visual.config._attn_implementation = NAME


# -------------------------------------------------------------------- packed groups
GROUPED = "mrm_grouped"
KERNELS = ("auto", "varlen", "sdpa", "dense")


@dataclass(frozen=True)
class SdpaBucket:
    """Segments of similar sizes as one zero-padded SDPA batch (the sdpa kernel)."""

    q_slots: torch.Tensor  # (S, Lq) index into the Tq queries (0 where padding)
    k_slots: torch.Tensor  # (S, Lk) index into the Tk keys
    q_valid: torch.Tensor  # (S, Lq) bool
    mask: torch.Tensor | None  # (S, 1, Lq, Lk) bool, True where attention is allowed; None: plain causal
    q_out: torch.Tensor  # (valid queries,) their index into Tq, in `q_valid` order


def _slots(starts: torch.Tensor, lengths: torch.Tensor, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.arange(longest, device=starts.device)
    valid = offsets[None, :] < lengths[:, None]
    return torch.where(valid, starts[:, None] + offsets[None, :], 0), valid


def _bucket(cu_q: torch.Tensor, cu_k: torch.Tensor, segments: list[int], q_len: list[int],
            k_len: list[int]) -> SdpaBucket:
    at = torch.tensor(segments, device=cu_q.device)
    lq, lk = torch.tensor([q_len[i] for i in segments], device=cu_q.device), torch.tensor(
        [k_len[i] for i in segments], device=cu_q.device)
    q_slots, q_valid = _slots(cu_q[:-1].long()[at], lq, max(q_len[i] for i in segments))
    k_slots, k_valid = _slots(cu_k[:-1].long()[at], lk, max(k_len[i] for i in segments))
    # query i of a segment is key i + (k_len - q_len): it sees keys up to and including itself
    q_pos = torch.arange(q_slots.shape[1], device=cu_q.device)[None, :] + (lk - lq)[:, None]
    k_pos = torch.arange(k_slots.shape[1], device=cu_q.device)
    mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & k_valid[:, None, :]
    mask = mask | ~q_valid[:, :, None]  # padding queries see everything: no all-masked softmax row
    if len(set(q_len[i] for i in segments) | set(k_len[i] for i in segments)) == 1:
        mask = None  # equal square segments: SDPA's own causal kernel, no mask at all
    return SdpaBucket(q_slots, k_slots, q_valid, None if mask is None else mask[:, None], q_slots[q_valid])


@dataclass(frozen=True)
class GroupPlan:
    """The segments of one packed batch, built once per forward and used by every layer."""

    q_index: torch.Tensor  # (Tq,) flat token index (row * L + column) of each segment's queries
    k_index: torch.Tensor  # (Tk,) flat token index of each segment's keys
    cu_q: torch.Tensor  # (S + 1,) int32 cumulative query lengths
    cu_k: torch.Tensor  # (S + 1,) int32 cumulative key lengths
    max_q: int
    max_k: int
    kernel: str  # varlen | sdpa
    buckets: tuple[SdpaBucket, ...] = ()  # sdpa: segments by shape, so padding stays small

    @classmethod
    def build(cls, batch: dict, *, kernel: str) -> "GroupPlan":
        """From a `collate_groups` batch (its `attn_*` tensors, on the model's device)."""
        max_q, max_k = (int(v) for v in batch["attn_max"].tolist())
        cu_q, cu_k = batch["attn_cu_q"], batch["attn_cu_k"]
        buckets: tuple[SdpaBucket, ...] = ()
        if kernel == "sdpa":
            bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
            q_len = [b - a for a, b in zip(bounds_q, bounds_q[1:])]
            k_len = [b - a for a, b in zip(bounds_k, bounds_k[1:])]
            by_shape: dict[tuple, list[int]] = {}
            for i, (a, b) in enumerate(zip(q_len, k_len)):
                # [prompt | response 1] segments by exact length (causal, unpadded); the others by sizes within 2x
                key = ("causal", a) if a == b else ("within", (a - 1).bit_length(), (b - 1).bit_length())
                by_shape.setdefault(key, []).append(i)
            buckets = tuple(_bucket(cu_q, cu_k, seg, q_len, k_len) for seg in by_shape.values())
        return cls(q_index=batch["attn_q_index"], k_index=batch["attn_k_index"], cu_q=cu_q, cu_k=cu_k,
                   max_q=max_q, max_k=max_k, kernel=kernel, buckets=buckets)


def _segments_sdpa(plan: GroupPlan, q, k, v, scaling):
    """(Tq, H, D), (Tk, H, D) -> (Tq, H, D): each bucket of segments as one zero-padded SDPA call."""
    def pad(t, slots):  # (T, H, D) -> (S, H, Lmax, D)
        s, length = slots.shape
        return t.index_select(0, slots.reshape(-1)).reshape(s, length, *t.shape[1:]).transpose(1, 2)

    out = q.new_zeros(q.shape)
    for b in plan.buckets:
        res = F.scaled_dot_product_attention(pad(q, b.q_slots), pad(k, b.k_slots), pad(v, b.k_slots),
                                             attn_mask=b.mask, is_causal=b.mask is None, scale=scaling)
        out = out.index_copy(0, b.q_out, res.transpose(1, 2)[b.q_valid])
    return out


def grouped_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None = None, scaling: float | None = None,
                      dropout: float = 0.0, group_plan: GroupPlan | None = None, fallback: str = "sdpa",
                      **kwargs):
    """query (B, H, L, D), key/value (B, Hkv, L, D) -> (B, L, H, D), packed groups per `group_plan`;
    without one, the `fallback` implementation with the given 4D mask, or none (causal, unpadded: the
    model's own forward and `generate` on one sequence, as a judge's critique runs)."""
    if group_plan is None:
        if attention_mask is not None and attention_mask.dim() != 4:
            raise ValueError(f"{GROUPED} attention needs a group plan or a 4D mask")
        import sys

        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        eager = sys.modules[type(module).__module__].eager_attention_forward  # the model's own
        implementation = ALL_ATTENTION_FUNCTIONS.get_interface(fallback, eager)
        return implementation(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if dropout:
        raise ValueError("packed group attention has no attention dropout")
    b, h, length, d = query.shape
    groups = h // key.shape[1]

    def flat(t):  # (B, H, L, D) -> (B * L, H, D)
        return t.transpose(1, 2).reshape(b * length, t.shape[1], d)

    q = flat(query).index_select(0, group_plan.q_index)
    k, v = flat(key).index_select(0, group_plan.k_index), flat(value).index_select(0, group_plan.k_index)
    if group_plan.kernel == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        out = varlen_attn(q, k, v, group_plan.cu_q, group_plan.cu_k, group_plan.max_q, group_plan.max_k,
                          scale=scaling, window_size=(-1, 0), enable_gqa=groups > 1)
    else:
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = _segments_sdpa(group_plan, q, k, v, scaling)
    full = out.new_zeros(b * length, h, d).index_copy(0, group_plan.q_index, out)
    return full.reshape(b, length, h, d), None


def use_grouped_attention(language_model) -> None:
    """Route the language model's attention through `grouped_attention` (idempotent); calls
    without a plan keep the implementation it was loaded with."""
    import functools

    from transformers import AttentionInterface

    config = language_model.config
    loaded = config._attn_implementation
    if loaded.startswith(GROUPED):
        return
    name = GROUPED if loaded == "sdpa" else f"{GROUPED}+{loaded}"
    AttentionInterface.register(name, functools.partial(grouped_attention, fallback=loaded))
    config._attn_implementation = name


def choose_kernel(kernel: str, *, device: torch.device, dtype: torch.dtype) -> str:
    """`auto` -> varlen on CUDA in half precision (what flash attention runs), sdpa elsewhere."""
    if kernel not in KERNELS:
        raise ValueError(f"packed attention must be one of {KERNELS}, got {kernel!r}")
    if kernel == "auto":
        return "varlen" if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) else "sdpa"
    if kernel == "varlen" and device.type != "cuda":
        raise ValueError("packed attention 'varlen' (flash attention) needs a CUDA device; use 'sdpa' here")
    return kernel
