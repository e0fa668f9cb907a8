"""The truncation policy: responses cut from the end, prompts never cut, unfit pairs refused."""

import numpy as np
import pytest

from mrm_ray.config import DataConfig
from mrm_ray.model.inputs import InvalidInput
from mrm_ray.model.truncation import cut_response, fit_responses

CONFIG = DataConfig(max_length=100, max_prompt_tokens=60, max_response_tokens=30, min_response_tokens=5)


def test_short_pairs_are_untouched():
    assert tuple(fit_responses(40, [10, 20], CONFIG)) == (10, 20)


def test_responses_capped_then_longer_cut_first():
    assert tuple(fit_responses(10, [50, 12], CONFIG)) == (30, 12)  # only the cap applies: 10 + 30 + 12 <= 100
    keep_c, keep_r = tuple(fit_responses(60, [30, 25], CONFIG))  # 115 > 100: cut 15, the longer first
    assert 60 + keep_c + keep_r == 100 and (keep_c, keep_r) in {(20, 20), (21, 19), (19, 21)}


def test_prompt_is_never_cut():
    with pytest.raises(InvalidInput, match="prompt too long: 61 tokens"):
        tuple(fit_responses(61, [5, 5], CONFIG))


def test_every_prompt_within_budget_fits_without_going_below_the_floor():
    tight = DataConfig(max_length=20, max_prompt_tokens=10, max_response_tokens=30, min_response_tokens=5)
    for prompt in range(0, 11):
        for chosen in range(1, 40, 3):
            for rejected in range(1, 40, 4):
                keep_c, keep_r = tuple(fit_responses(prompt, [chosen, rejected], tight))
                assert prompt + keep_c + keep_r <= tight.max_length
                assert keep_c >= min(chosen, 5) and keep_r >= min(rejected, 5)
                assert keep_c <= chosen and keep_r <= rejected


def test_cut_keeps_the_reward_token():
    ids = np.arange(10)
    assert cut_response(ids, 4).tolist() == [0, 1, 2, 9]
    assert cut_response(ids, 10) is ids


def test_config_must_leave_room():
    with pytest.raises(ValueError, match="max_length"):
        DataConfig(max_length=100, max_prompt_tokens=95, min_response_tokens=5)


def test_several_responses_fit_pair_by_pair_and_two_are_exactly_a_pair():
    config = DataConfig(max_length=300, max_prompt_tokens=200, max_response_tokens=120, min_response_tokens=8)
    for prompt, a, b in [(150, 120, 100), (200, 130, 5), (100, 40, 60), (190, 200, 200)]:
        assert fit_responses(prompt, [a, b], config) == list(tuple(fit_responses(prompt, [a, b], config)))
    keep = fit_responses(180, [110, 90, 30, 100], config)
    assert all(180 + x + y <= 300 for i, x in enumerate(keep) for y in keep[i + 1:])  # every pair fits
    assert keep[2] == 30 and min(keep) >= 8  # short ones untouched, none below the floor
