"""The hybrid reward: exact normalised answer match -> 1, else sigmoid of the model reward."""

import math

import pytest

from mrm_ray.rl.rewards import answer_matches, extract_answer, hybrid_reward, normalize_answer


@pytest.mark.parametrize("response, answer", [
    ("so x = \\boxed{\\frac{1}{2}} here", "\\frac{1}{2}"),
    ("first \\boxed{3} then \\boxed{4}", "4"),
    ("<think>hmm</think><answer> B </answer>", " B "),
    ("Working...\nThe answer is: 42.", "42."),
    ("just text", "just text"),
])
def test_extract_answer(response, answer):
    assert extract_answer(response) == answer


def test_normalize_answer():
    assert normalize_answer("  The Red Car. ") == "red car"
    assert normalize_answer("-3.5") == "-3.5"
    assert normalize_answer("A") == ""  # an article alone normalises away, so it can never match


def test_hybrid_reward():
    assert hybrid_reward("The answer is 7", "7", -5.0) == 1.0
    assert hybrid_reward("\\boxed{8}", "7", 0.0) == 0.5
    assert hybrid_reward("7", None, 2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert hybrid_reward("anything", "", 0.0) == 0.5  # an empty reference never matches
    assert hybrid_reward("x", "y", -1000.0) == pytest.approx(0.0) and not answer_matches("red", "blue")
