"""The GRPO presets load, paths resolve for actors elsewhere, bad settings are refused by name."""

from pathlib import Path

import pytest

from mrm_ray.config import load_grpo_config

from mrm_ray.config.shipped import path as shipped


@pytest.mark.parametrize("name", ["tiny", "qwen2_5_vl_3b"])
def test_presets_load(name):
    cfg = load_grpo_config(name)
    assert cfg.rollout.group_size == 8 and cfg.reward.mode == "hybrid"
    assert Path(cfg.output_dir).is_absolute() and Path(cfg.reward.serve_config).is_file()


def test_overrides_and_path_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_grpo_config("tiny",
                           ["reward.members=[tiny:0,ckpts/rm]", "optim.learning_rate=2e-3", "steps=3"])
    assert cfg.reward.members == ("tiny:0", str(tmp_path / "ckpts" / "rm"))
    assert cfg.optim.learning_rate == 2e-3 and cfg.steps == 3 and cfg.policy == "tiny"
    assert cfg.reward.serve_config == str(shipped("serve", "tiny"))  # found from any directory


def test_robust_reward_settings():
    cfg = load_grpo_config("tiny", ["reward.method=uwo", "reward.uncertainty_coef=1.5", "reward.gold=rule",
                                    "reward.max_disagreement=0.8"])
    r = cfg.reward
    assert (r.method, r.uncertainty_coef, r.gold, r.max_disagreement) == ("uwo", 1.5, "rule", 0.8)
    default = load_grpo_config("tiny").reward
    assert (default.method, default.uncertainty_coef, default.gold, default.max_disagreement) == (None,) * 4
    with pytest.raises(ValueError, match="max_disagreement.*mode=rule"):
        load_grpo_config("tiny", ["reward.mode=rule", "reward.max_disagreement=1"])


@pytest.mark.parametrize("override,message", [("reward.mode=best", "reward.mode"),
                                              ("reward.method=median", "reward.method"),
                                              ("reward.uncertainty_coef=-1", "reward.uncertainty_coef"),
                                              ("reward.uncertainty_coef=inf", "reward.uncertainty_coef"),
                                              ("reward.gold=human", "reward.gold"),
                                              ("reward.max_disagreement=0", "reward.max_disagreement"),
                                              ("rollout.group_size=1", "group_size"),
                                              ("optim.lr=1", "optim.lr: unknown setting")])
def test_bad_settings_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_grpo_config("tiny", [override])
