"""The truncation policy, one pure function the data pipeline's light pass and the encoder both decide with,
from the same counts (`PairEncoder.count_prompt_tokens`), so the two cannot treat a record differently.

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
from mrm_ray.model.inputs import InvalidInput


def fit_responses(prompt: int, responses: list[int], config: DataConfig) -> list[int]:
    """Token counts of a prompt and its responses -> kept response lengths, or InvalidInput. Every pair
    (the prompt and any two responses) fits `max_length`: the longest response is cut down toward
    the next longest (or the floor) until the two longest fit; for a pair, the longer toward the
    shorter."""
    if prompt > config.max_prompt_tokens:
        raise InvalidInput(f"prompt too long: {prompt} tokens > max_prompt_tokens {config.max_prompt_tokens}")
    keep = [min(n, config.max_response_tokens) for n in responses]
    while True:
        order = sorted(range(len(keep)), key=lambda i: (-keep[i], i))  # ties: the first response is cut first
        top, second = order[0], order[1]
        over = prompt + keep[top] + keep[second] - config.max_length
        if over <= 0:
            return keep
        keep[top] -= min(over, max(1, keep[top] - max(keep[second], config.min_response_tokens)))


def cut_response(ids: np.ndarray, keep: int) -> np.ndarray:
    """The first `keep - 1` tokens and the final end-of-turn token (the reward token)."""
    return ids if len(ids) <= keep else np.concatenate([ids[: keep - 1], ids[-1:]])
