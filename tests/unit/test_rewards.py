"""Answer checking, the rule reward and the hybrid reward (mrm_ray/rewards.py), table-driven with the
cases RL stacks' graders meet: boxed answers with nested braces, choice letters, numbers with
thousands separators, currency, percent signs, units and fractions."""

import math

import pytest

from mrm_ray.rewards import answer_matches, extract_answer, hybrid_reward, normalize_answer, rule_reward


@pytest.mark.parametrize("response, answer", [
    ("so x = \\boxed{\\frac{1}{2}} here", "\\frac{1}{2}"),
    ("first \\boxed{3} then \\boxed{4}", "4"),
    ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),  # braces nested two deep
    ("the result is $\\boxed 7$", "7"),
    ("\\fbox{12}", "12"),
    ("<think>hmm</think><answer> B </answer>", " B "),
    ("Working...\nThe answer is: 42.", "42."),
    ("Working...\nFinal answer: 7 cm", "7 cm"),
    ("just text", "just text"),
])
def test_extract_answer(response, answer):
    assert extract_answer(response) == answer


@pytest.mark.parametrize("response, reference, matches", [
    # choice letters: "A" is a choice, not an article
    ("\\boxed{A}", "A", True),
    ("The answer is (B) because the sky is blue.", "B", True),
    ("Answer: c", "C", True),  # a letter alone is a choice, whatever its case
    ("B. red", "(B)", True),
    ("(D) 12 apples", "D.", True),
    ("I think it is C.", "C", True),
    ("I think it is C.", "I", False),  # "I think" is not choice I
    ("A cat sat on the mat", "A", False),  # "A cat" is not choice A
    ("<answer>B</answer>", "A", False),
    ("No idea.", "A", False),
    # numbers
    ("The answer is 1000.", "1,000", True),
    ("\\boxed{1,234,567}", "1234567", True),
    ("\\boxed{\\$1,234.50}", "$1234.5", True),
    ("\\boxed{50\\%}", "50%", True),
    ("\\boxed{50}", "50%", True),  # a bare number matches one with a unit
    ("\\boxed{5\\text{ cm}}", "5 cm", True),
    ("\\boxed{5 m}", "5 cm", False),  # both name a unit: they must agree
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("\\boxed{\\dfrac{3}{4}}", "3/4", True),
    ("x = -3.5", "-3.5", True),
    ("\\boxed{3.0}", "3", True),
    ("\\boxed{3.14159}", "3.14", False),
    ("\\boxed{2}", "12", False),
    ("there are 12 of them", "12", False),  # a sentence is not a number
    ("\\boxed{1,2}", "12", False),  # not a thousands separator
    # text
    ("The answer is: The Red Car.", "red car", True),
    ("<answer>blue</answer>", "red", False),
    ("\\boxed{\\text{Paris}}", "paris", True),
    ("anything", "", False),  # an empty reference never matches
    ("anything", None, False),
])
def test_answer_matches(response, reference, matches):
    assert answer_matches(response, reference) is matches


def test_normalize_answer():
    assert normalize_answer("  The Red Car. ") == "red car"
    assert normalize_answer("-3.5") == "-3.5"
    assert normalize_answer("A") == "a"  # an article alone is still an answer


def test_rule_and_hybrid_reward():
    assert rule_reward("\\boxed{A}", "A") == 1.0 and rule_reward("\\boxed{B}", "A") == 0.0
    assert hybrid_reward("The answer is 7", "7", -5.0) == 1.0
    assert hybrid_reward("\\boxed{8}", "7", 0.0) == 0.5
    assert hybrid_reward("7", None, 2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert hybrid_reward("anything", "", 0.0) == 0.5
    assert hybrid_reward("x", "y", -1000.0) == pytest.approx(0.0)
