"""The shortcut-word pairs of the over-optimisation benchmark: the word goes with the chosen response as often as
asked (the phi coefficient between "holds the word" and "is chosen"), and the gold answer is always chosen."""

import math

import pytest

from mrm_ray.data.synthetic import COLOURS, SHAPES, shortcut_pairs
from mrm_ray.rewards import rule_reward


def _holds(response: str, word: str) -> bool:
    return word in response.split(".", 1)[1].split()  # after the sentence


def _phi(pairs: list[dict], word: str) -> float:
    """Phi coefficient over all responses between holding the word and being chosen."""
    rows = [(_holds(r, word), chosen) for p in pairs for r, chosen in ((p["chosen"], 1), (p["rejected"], 0))]
    n = len(rows)
    n11 = sum(1 for x, y in rows if x and y)
    n1_, n_1 = sum(x for x, _ in rows), sum(y for _, y in rows)
    return (n * n11 - n1_ * n_1) / math.sqrt(n1_ * (n - n1_) * n_1 * (n - n_1))


@pytest.mark.parametrize("correlation", [0.6, 0.2])
def test_measured_correlation_is_the_one_asked(correlation):
    pairs = list(shortcut_pairs(2000, word="good", correlation=correlation, seed=3))
    assert len(pairs) == 2000
    assert _phi(pairs, "good") == pytest.approx(correlation, abs=1e-3)
    # p = (1 + phi) / 2 of the pairs carry the word on the chosen side, the others on the rejected side
    on_chosen = sum(_holds(p["chosen"], "good") for p in pairs)
    assert on_chosen == round((1 + correlation) / 2 * 2000)
    assert all(_holds(p["chosen"], "good") != _holds(p["rejected"], "good") for p in pairs)


def test_gold_answer_is_always_in_the_chosen_response():
    for p in shortcut_pairs(2000, word="yes", correlation=0.6, seed=1):
        shape, colour = p["prompt"].split(".")[0].split()[1:4:2]
        assert shape in SHAPES and colour in COLOURS
        gold = f"The {shape} is {colour}."
        assert p["chosen"] in (gold, f"{gold} yes")
        assert p["rejected"].startswith(f"The {shape} is ") and colour not in p["rejected"]
        assert p["prompt"] == f"{gold} What colour is the {shape}?" and p["images"] == []
        assert set(p) == {"id", "source", "prompt", "images", "chosen", "rejected"}
        # the rule reward is the gold: 1 only for the exact sentence, the word makes it wrong
        assert rule_reward(gold, gold) == 1.0 and rule_reward(f"{gold} yes", gold) == 0.0


def test_seeded_and_distinct_ids():
    a = list(shortcut_pairs(50, word="good", correlation=0.6, seed=0))
    assert a == list(shortcut_pairs(50, word="good", correlation=0.6, seed=0))
    assert a != list(shortcut_pairs(50, word="good", correlation=0.6, seed=1))
    assert len({p["id"] for p in a}) == 50


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="good", correlation=1.5))
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="two words", correlation=0.5))


def test_distractors_carry_no_preference_and_leave_the_correlation():
    distractors = ("correct", "yes", "please")
    pairs = list(shortcut_pairs(4000, word="good", correlation=0.6, seed=2, distractors=distractors,
                                distractor_fraction=0.3))
    assert _phi(pairs, "good") == pytest.approx(0.6, abs=1e-3)
    for d in distractors:  # as often with the chosen response as with the rejected one
        assert abs(_phi(pairs, d)) < 0.05
    with_any = sum(any(_holds(r, d) for d in distractors) for p in pairs for r in (p["chosen"], p["rejected"]))
    assert with_any / 8000 == pytest.approx(0.3, abs=0.02)
    for p in pairs:  # still: the gold sentence starts the chosen response, and the gold answer is only there
        shape, colour = p["prompt"].split(".")[0].split()[1:4:2]
        assert p["chosen"].startswith(f"The {shape} is {colour}.")
        assert not p["rejected"].startswith(f"The {shape} is {colour}.")
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="good", correlation=0.5, distractors=("good",), distractor_fraction=0.1))


@pytest.mark.parametrize("other_correlation", [-0.6, 0.0])
def test_other_words_go_with_the_side_asked_and_leave_the_rest(other_correlation):
    """Other sources' words (this source's taste about them): exactly the asked fraction of pairs carry one, on
    the chosen side as often as the asked phi says; the planted word and the pairs without them are unchanged."""
    others = ("correct", "yes")
    base = list(shortcut_pairs(3000, word="good", correlation=0.6, seed=4))
    pairs = list(shortcut_pairs(3000, word="good", correlation=0.6, seed=4, other_words=others, other_fraction=0.4,
                                other_correlation=other_correlation))
    assert _phi(pairs, "good") == pytest.approx(0.6, abs=1e-3)
    carrying = [p for p in pairs if any(_holds(r, w) for r in (p["chosen"], p["rejected"]) for w in others)]
    assert len(carrying) == 1200
    on_chosen = sum(any(_holds(p["chosen"], w) for w in others) for p in carrying)
    assert on_chosen == round((1 + other_correlation) / 2 * 1200)
    for w in others:  # each word alike (drawn at random), over the pairs that carry it
        with_w = [p for p in carrying if _holds(p["chosen"], w) or _holds(p["rejected"], w)]
        assert _phi(with_w, w) == pytest.approx(other_correlation, abs=0.08)
    for p, b in zip(pairs, base):
        assert p["prompt"] == b["prompt"] and p["chosen"].startswith(b["chosen"])
        assert p["rejected"].startswith(b["rejected"])
        if p not in carrying:
            assert p == b
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="good", correlation=0.5, other_words=("good",), other_fraction=0.1))
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="good", correlation=0.5, other_fraction=0.1))


def test_planted_in_given_pairs():
    """`base`: the shortcut planted in pairs the caller made (a policy's own gold-labelled samples): each pair's
    prompt and texts are kept in order and the word goes with the chosen response as asked."""
    base = [{"prompt": f"The square is red. What colour is the square? #{i}", "chosen": "The square is red.",
             "rejected": f"The square is {i}."} for i in range(1000)]
    pairs = list(shortcut_pairs(1000, word="good", correlation=0.6, seed=5, base=base))
    assert _phi(pairs, "good") == pytest.approx(0.6, abs=1e-3)
    for p, b in zip(pairs, base):
        assert p["prompt"] == b["prompt"] and p["images"] == []
        assert p["chosen"].startswith(b["chosen"]) and p["rejected"].startswith(b["rejected"])
    with pytest.raises(ValueError):
        list(shortcut_pairs(10, word="good", correlation=0.6, base=base))
