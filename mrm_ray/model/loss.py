"""Bradley-Terry pairwise loss and the metrics that go with it (pure functions).

loss = -log sigmoid(r_c - r_r - margin), optionally with BaseReward's two tested
regularisers: reward centring lambda * mean((r_c + r_r)^2) and length normalisation
r / log(len + 1). Both are off by default, as in the paper's final recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mrm_ray.config import LossConfig


@dataclass(frozen=True)
class PairLoss:
    """Scalar tensors; `loss` carries the gradient, the rest are detached metrics."""

    loss: torch.Tensor
    accuracy: torch.Tensor  # fraction with r_c > r_r (ties count as wrong)
    margin: torch.Tensor  # mean of r_c - r_r
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor

    def metrics(self) -> dict[str, float]:
        return {
            "loss": float(self.loss.detach()),
            "accuracy": float(self.accuracy),
            "margin": float(self.margin),
            "chosen_reward": float(self.chosen_reward),
            "rejected_reward": float(self.rejected_reward),
        }


def length_normalize(rewards: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """rewards (B,) / log(lengths (B,) + 1)."""
    return rewards / torch.log(lengths.to(rewards.dtype) + 1.0)


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    *,
    config: LossConfig = LossConfig(),
    margin: torch.Tensor | None = None,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> PairLoss:
    """chosen, rejected: (B,) rewards; margin: (B,) or None; lengths: (B,) response tokens."""
    chosen, rejected = chosen.float(), rejected.float()
    if config.length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("length_normalize needs chosen_lengths and rejected_lengths")
        chosen = length_normalize(chosen, chosen_lengths)
        rejected = length_normalize(rejected, rejected_lengths)
    diff = chosen - rejected
    logits = diff - margin.to(diff) if (config.use_margin and margin is not None) else diff
    loss = -F.logsigmoid(logits).mean()
    if config.centering_coef > 0:
        loss = loss + config.centering_coef * ((chosen + rejected) ** 2).mean()
    with torch.no_grad():
        return PairLoss(
            loss=loss,
            accuracy=(diff > 0).float().mean(),
            margin=diff.mean(),
            chosen_reward=chosen.mean(),
            rejected_reward=rejected.mean(),
        )
