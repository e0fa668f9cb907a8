"""Published benchmark arithmetic, by hand: ties are wrong, Acc+ by id, Macro over three categories."""

import numpy as np
import pytest

from mrm_ray.eval import metrics


def test_ties_and_nan_count_as_wrong():
    assert metrics.correct([1.0, 1.0, 2.0, float("nan")], [0.0, 1.0, 3.0, 0.0]).tolist() == [True, False, False, False]


def test_mm_rlhf_published_figures():
    # 170 pairs over 46 ids, 156 pairs right, 37 ids with every pair right: the BaseReward figures
    group_ids = [f"id{i}" for i in range(46) for _ in range(4 if i < 32 else 3)][:170]
    assert len(group_ids) == 170 and len(set(group_ids)) == 46
    ok = np.ones(170, dtype=bool)
    wrong_ids = [f"id{i}" for i in range(9)]  # 9 ids get wrong pairs -> 37 of 46 all-correct
    first = [group_ids.index(g) for g in wrong_ids]
    wrong = first + [j + 1 for j in first[:5]]  # 14 wrong pairs -> 156 right
    assert {group_ids[j] for j in wrong} == set(wrong_ids)
    ok[wrong] = False
    categories = ["mcq"] * 100 + ["long"] * 70
    out = metrics.mm_rlhf(ok, group_ids, categories)
    assert metrics.percent(out["Acc"]) == "91.76" and metrics.percent(out["Acc+"]) == "80.43"
    assert out["counts"]["pairs"] == 170 and out["counts"]["ids"] == 46
    assert out["per_category"]["mcq"] == pytest.approx(ok[:100].mean())


def test_vl_rewardbench_overall_and_macro():
    categories = ["general"] * 183 + ["hallucination"] * 749 + ["reasoning"] * 318
    ok = np.zeros(1250, dtype=bool)
    ok[:100] = True  # general 100/183
    ok[183:183 + 700] = True  # hallucination 700/749
    ok[932:932 + 159] = True  # reasoning 159/318 = 0.5
    out = metrics.vl_rewardbench(ok, categories)
    assert out["Overall"] == pytest.approx(959 / 1250)
    assert out["Macro"] == pytest.approx((100 / 183 + 700 / 749 + 0.5) / 3)
    assert out["published_sizes_met"] is True
    assert metrics.vl_rewardbench(ok[:10], categories[:10])["published_sizes_met"] is False
    with pytest.raises(ValueError, match="unknown"):
        metrics.vl_rewardbench([True], ["other"])


def test_multimodal_rewardbench_and_pairwise():
    out = metrics.multimodal_rewardbench([True, False, True, True], ["vqa", "vqa", "safety/bias", "knowledge"])
    assert out["Overall"] == 0.75 and out["per_category"] == {"knowledge": 1.0, "safety/bias": 1.0, "vqa": 0.5}
    pw = metrics.pairwise([True, False, False], ["a", "a", "b"])
    assert pw["accuracy"] == pytest.approx(1 / 3) and pw["per_source"] == {"a": 0.5, "b": 0.0}


def test_reliability_counts_each_pair_in_both_orders():
    # margins 0 and ln 3: prob_chosen 0.5 and 0.75; both orders give (0.5, 1), (0.75, 1), (0.5, 0), (0.25, 0)
    out = metrics.reliability([0.0, np.log(3.0), float("nan")], bins=10)
    assert out["pairs"] == 2
    filled = {i: (b["count"], b["mean_prob"], b["observed"]) for i, b in enumerate(out["bins"]) if b["count"]}
    assert filled == {2: (1, pytest.approx(0.25), 0.0), 5: (2, pytest.approx(0.5), 0.5),
                      7: (1, pytest.approx(0.75), 1.0)}
    assert out["ece"] == pytest.approx((2 * 0 + 0.25 + 0.25) / 4)
    assert out["bins"][0] == {"lo": 0.0, "hi": 0.1, "count": 0, "mean_prob": None, "observed": None}
    # always right and sure: perfectly calibrated at the ends
    assert metrics.reliability([50.0, 60.0])["ece"] == pytest.approx(0.0, abs=1e-12)


def test_mmrb2_is_pairwise_accuracy_per_prompt_source():
    out = metrics.mmrb2([True, False, True, True], ["blink", "blink", "vstar", "mindcube"])
    assert out["Reasoning"] == 0.75 and out["per_category"] == {"blink": 0.5, "mindcube": 1.0, "vstar": 1.0}
    assert out["counts"] == {"pairs": 4, "blink": 2, "mindcube": 1, "vstar": 1}
