"""The truncation policy, one pure function used both when checking and when encoding.

Prompts are never cut (cutting one can split an image's tokens or drop the question);
a prompt over `max_prompt_tokens` is quarantined. Each response is cut from its end to
`max_response_tokens`, keeping the closing `<|im_end|>` the reward is read at; if the
packed row still exceeds `max_length`, the longer response is cut first, never below
`min_response_tokens`. A pair that cannot fit is quarantined, not trimmed into a
different pair.
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
    while over > 0:
        longer = max(keep_c, keep_r)
        if longer <= config.min_response_tokens:
            raise BadRecord(f"pair too long: {prompt}+{chosen}+{rejected} tokens cannot fit max_length "
                            f"{config.max_length} without cutting a response below {config.min_response_tokens}")
        shorter = min(keep_c, keep_r)
        cut = min(over, longer - max(shorter, config.min_response_tokens)) or 1
        if keep_c >= keep_r:
            keep_c -= cut
        else:
            keep_r -= cut
        over -= cut
    return keep_c, keep_r


def cut_response(ids: np.ndarray, keep: int) -> np.ndarray:
    """The first `keep - 1` tokens and the final end-of-turn token (the reward token)."""
    return ids if len(ids) <= keep else np.concatenate([ids[: keep - 1], ids[-1:]])
