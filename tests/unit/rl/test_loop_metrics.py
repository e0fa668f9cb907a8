"""The GRPO driver's measurement: the gold reward (missing, never 0, without a reference), the per-step curves."""

from mrm_ray.rl.loop import _gold_metrics, curves, gold_rewards, progress_line, step_timing


def test_gold_is_the_rule_reward_and_missing_without_a_reference():
    items = [{"response": "red", "reference": "red"}, {"response": "The answer is blue", "reference": "red"},
             {"response": "red", "reference": None}, {"response": "red"}]
    gold = gold_rewards("rule", items)
    assert gold == [1.0, 0.0, None, None]
    assert _gold_metrics(gold) == {"reward/gold": 0.5, "reward/gold_missing": 2}
    assert _gold_metrics([None, None]) == {"reward/gold_missing": 2}  # no gold figure at all, not 0
    assert gold_rewards(None, items) == [None] * 4


def test_curves_hold_every_name_per_step():
    points = [{"step": 1, "reward/mean": 0.1, "reward/member/a": 0.3},
              {"step": 2, "reward/mean": 0.2, "reward/gold": 0.5, "reward/member/a": 0.4}]
    assert curves(points) == {"step": [1, 2], "reward/gold": [None, 0.5], "reward/mean": [0.1, 0.2],
                              "reward/member/a": [0.3, 0.4]}


def test_the_progress_line_shows_gold_and_filtered_rollouts():
    m = {"reward/mean": 0.5, "reward/std": 0.1, "reward/served_mean": 0.2, "reward/disagreement": 0.3,
         "reward/member/a": 0.1, "reward/gold": 0.25, "reward/filtered": 3, "policy/kl": 0.01,
         "policy/response_length": 4.0, "time/rollout_s": 1.0, "time/reward_wait_s": 0.1, "time/reward_call_s": 0.05,
         "time/update_s": 0.5}
    line = progress_line(2, 10, m)
    assert "gold 0.250" in line and "filtered 3" in line and "a +0.100" in line
    assert "gold" not in progress_line(2, 10, {k: v for k, v in m.items() if k not in ("reward/gold",)})


def test_step_timing_measures_the_wait_on_rewards_and_what_sampling_hid():
    # sampling 0 -> 4 s, first reward request at 1 s, last answer at 5 s, update until 6 s
    t = step_timing(start=0.0, first_submit=1.0, sampled=4.0, rewarded=5.0, updated=6.0, end=6.0)
    assert t["time/rollout_s"] == 4.0 and t["time/reward_wait_s"] == 1.0 and t["time/update_s"] == 1.0
    assert t["time/reward_wait_fraction"] == 1.0 / 6.0
    assert t["time/reward_hidden_fraction"] == 3.0 / 4.0  # 3 of the 4 reward seconds ran beside sampling
    # every reward back before sampling ended: nothing waited, all hidden
    t = step_timing(start=0.0, first_submit=1.0, sampled=4.0, rewarded=4.0, updated=5.0, end=5.0)
    assert t["time/reward_wait_fraction"] == 0.0 and t["time/reward_hidden_fraction"] == 1.0
    # rewards asked only after sampling (the serial way): none hidden
    t = step_timing(start=0.0, first_submit=4.0, sampled=4.0, rewarded=6.0, updated=7.0, end=7.0)
    assert t["time/reward_hidden_fraction"] == 0.0 and t["time/reward_wait_fraction"] == 2.0 / 7.0
