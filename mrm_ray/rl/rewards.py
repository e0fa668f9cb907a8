"""The hybrid reward of BaseReward's RL experiments.

With a reference answer, a response whose final answer matches it exactly (after
normalisation) earns 1; otherwise the reward model decides, squashed to (0, 1) by a
sigmoid so that both branches share one scale.
"""

from __future__ import annotations

import math
import re
import string

_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is\s*:?|:)\s*(.+?)\s*$", re.I | re.S)
_PUNCT = str.maketrans("", "", string.punctuation.replace("-", "").replace(".", ""))


def extract_answer(response: str) -> str:
    """The final answer: last \\boxed{...}, else <answer>...</answer>, else 'the answer is X', else all."""
    for pattern in (_BOXED, _ANSWER_TAG):
        found = pattern.findall(response)
        if found:
            return found[-1]
    last_line = response.strip().splitlines()[-1] if response.strip() else ""
    match = _ANSWER_IS.search(last_line)
    return match.group(1) if match else response


def normalize_answer(text: str) -> str:
    """Case, surrounding whitespace, punctuation (but '-' and '.'), a trailing period, articles."""
    text = text.strip().lower().translate(_PUNCT).rstrip(".").strip()
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def answer_matches(response: str, reference: str) -> bool:
    reference = normalize_answer(reference)
    return bool(reference) and normalize_answer(extract_answer(response)) == reference


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def hybrid_reward(response: str, reference: str | None, model_reward: float) -> float:
    """1.0 on an exact normalised match with `reference`; otherwise sigmoid(model_reward)."""
    if reference is not None and answer_matches(response, reference):
        return 1.0
    return sigmoid(model_reward)
