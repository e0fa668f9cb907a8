"""The truncation policy, one pure function used both when checking and when encoding.

Prompts are never cut (cutting one can split an image's tokens or drop the question):
a prompt over `max_prompt_tokens` makes the pair unfit, and it is quarantined rather than
trimmed into a different pair. Each response is cut from its end to
`max_response_tokens`, keeping the closing `<|im_end|>` the reward is read at; if the
packed row still exceeds `max_length`, the longer response is cut first. `DataConfig`
guarantees `max_prompt_tokens + 2 * min_response_tokens <= max_length`, so every prompt
that passes fits without cutting a response below `min_response_tokens`.
"""

from __future__ import annotations

import numpy as np

from mrm_ray.config import DataConfig
from mrm_ray.data.quarantine import BadRecord


def fit_pair(prompt: int, chosen: int, rejected: int, config: DataConfig) -> tuple[int, int]:
    """Token counts (prompt, chosen, rejected) -> kept (chosen, rejected) lengths, or BadRecord."""
    if prompt > config.max_prompt_tokens:
        raise BadRecord(f"prompt too long: {prompt} tokens > max_prompt_tokens {config.max_prompt_tokens}")
    keep_c, keep_r = min(chosen, config.max_response_tokens), min(rejected, config.max_response_tokens)
    over = prompt + keep_c + keep_r - config.max_length
    while over > 0:  # cut the longer response down toward the shorter one (or the floor)
        if keep_c >= keep_r:
            step = min(over, max(1, keep_c - max(keep_r, config.min_response_tokens)))
            keep_c -= step
        else:
            step = min(over, max(1, keep_r - max(keep_c, config.min_response_tokens)))
            keep_r -= step
        over -= step
    return keep_c, keep_r


def cut_response(ids: np.ndarray, keep: int) -> np.ndarray:
    """The first `keep - 1` tokens and the final end-of-turn token (the reward token)."""
    return ids if len(ids) <= keep else np.concatenate([ids[: keep - 1], ids[-1:]])
