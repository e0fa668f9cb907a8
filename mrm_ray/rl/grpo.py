"""GRPO's arithmetic (pure tensor functions, unit-tested by hand).

Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath) samples G responses per
prompt, normalises each reward within its group (no value network), and maximises a clipped
importance-weighted objective with a KL penalty to a frozen reference policy:

    A_i    = (r_i - mean(r_group)) / (std(r_group) + eps)
    ratio  = exp(logp - logp_old)                       per response token
    pg     = -min(ratio * A, clip(ratio, 1 - e, 1 + e) * A)
    kl     = exp(ref - logp) - (ref - logp) - 1         the "k3" estimator, >= 0, unbiased
    loss   = mean over responses of (mean over its tokens of pg + beta * kl)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, *, eps: float = 1e-6,
                     scale: bool = True) -> torch.Tensor:
    """rewards (N,) laid out group by group -> advantages (N,); a group with equal rewards gets 0."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.float().view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (groups.std(dim=1, unbiased=False, keepdim=True) + eps)
    return centred.view(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """logits (B, T, V) predicting `tokens` (B, T) -> log-probabilities (B, T) at the sampling temperature."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from samples of the policy (Schulman's k3)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@dataclass
class LossOut:
    loss: torch.Tensor
    pg_loss: float
    kl: float
    clip_fraction: float
    ratio_max: float


def masked_mean_per_row(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, *, clip_eps: float = 0.2, kl_coef: float = 0.04) -> LossOut:
    """logp/old_logp/ref_logp/mask (B, T) over response tokens, advantages (B,) -> the GRPO loss.

    Padding positions may hold anything (even -inf log-probs): they are zeroed before use."""
    keep = mask.bool()
    logp, old_logp = logp.masked_fill(~keep, 0.0), old_logp.masked_fill(~keep, 0.0)
    ref_logp = ref_logp.masked_fill(~keep, 0.0) if ref_logp is not None else None
    mask = keep.float()
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None].float()
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    pg = -torch.minimum(unclipped, clipped)
    per_row = masked_mean_per_row(pg, mask)
    kl_rows = masked_mean_per_row(kl_k3(logp, ref_logp), mask) if ref_logp is not None else torch.zeros_like(per_row)
    loss = (per_row + kl_coef * kl_rows).mean()
    with torch.no_grad():
        clipped_tokens = ((ratio - 1.0).abs() > clip_eps).float()
        n = mask.sum().clamp(min=1)
        return LossOut(loss=loss, pg_loss=float(per_row.mean()), kl=float(kl_rows.mean()),
                       clip_fraction=float((clipped_tokens * mask).sum() / n),
                       ratio_max=float((ratio * mask).max()) if mask.any() else 1.0)
