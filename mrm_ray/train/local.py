"""A single-process Bradley-Terry training loop on pre-encoded pairs.

Small on purpose: the learning tests, the CPU demo and the bare-PyTorch baseline of the
training benchmark use it. Distributed training (Ray Train + DeepSpeed) lives beside it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from mrm_ray.config import LocalTrainConfig
from mrm_ray.model.loss import bradley_terry_loss
from mrm_ray.model.packing import collate_packed, collate_two_sequence
from mrm_ray.model.reward_model import RewardModel


def cosine_with_warmup(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def pairwise_accuracy(model: RewardModel, encoder, pairs: Sequence[dict]) -> float:
    """Fraction of encoded pairs with reward(chosen) > reward(rejected), scored by the one
    scorer (model/scorer.py); ties count as wrong."""
    from mrm_ray.model.packing import pair_group
    from mrm_ray.model.scorer import Scorer

    rewards = Scorer.from_model(model, encoder).score_encoded([pair_group(p) for p in pairs])
    return sum(c > r for c, r in rewards) / max(1, len(pairs))


def train_pairs(model: RewardModel, pairs: Sequence[dict], *, pad_token_id: int,
                config: LocalTrainConfig = LocalTrainConfig(),
                on_step: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Train `model` in place on encoded pairs; return per-step metrics."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, warmup=config.warmup_steps, total=config.steps))

    def collate(sample: list[dict]) -> dict:
        if config.packed:  # one response per row where the family cannot share the prompt (model/families.py)
            return collate_packed(sample, pad_token_id=pad_token_id, share_prompt=model.shares_prompt)
        return collate_two_sequence(sample, pad_token_id=pad_token_id)

    model.train()
    history = []
    for step in range(config.steps):
        batch = collate(rng.sample(list(pairs), min(config.batch_size, len(pairs))))
        chosen, rejected = model.forward_pairs(batch)
        out = bradley_terry_loss(chosen, rejected, config=config.loss, margin=batch.get("margin"),
                                 chosen_lengths=batch["chosen_lengths"], rejected_lengths=batch["rejected_lengths"])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        schedule.step()
        metrics = {"step": step + 1, "lr": schedule.get_last_lr()[0], **out.metrics()}
        history.append(metrics)
        if on_step is not None:
            on_step(step + 1, metrics)
    model.eval()
    return history
