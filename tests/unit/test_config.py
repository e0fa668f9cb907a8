"""Run configs: YAML + overrides, validation, round trip through plain dicts, shipped presets."""

from pathlib import Path

import pytest

from mrm_ray.config import RunConfig, build, load_run_config, parse_overrides, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "jobs" / "configs").glob("*.yaml"))


def test_overrides_are_typed():
    assert parse_overrides(["a=1", "b=2e-3", "c=true", "d=null", "e=text", "f.g=0.5"]) == {
        "a": 1, "b": 0.002, "c": True, "d": None, "e": "text", "f.g": 0.5}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["novalue"])


def test_nested_overrides_and_round_trip(tmp_path):
    run = load_run_config(None, ["train.zero_stage=3", "model.head.num_layers=1", "train.lora.rank=8",
                                 "output_dir=rel", "model.path=some/dir"])
    assert run.train.zero_stage == 3 and run.model.head.num_layers == 1 and run.train.lora.rank == 8
    assert Path(run.output_dir).is_absolute() and Path(run.model.path).is_absolute()
    assert build(RunConfig, to_dict(run)) == run


@pytest.mark.parametrize("bad", [["train.zero_stage=4"], ["train.offload_params=true"], ["train.nope=1"],
                                 ["train.global_batch_size=10", "train.micro_batch_size=4"]])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        load_run_config(None, bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_says_how_to_launch(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("jobs/train.py" in first or "jobs/grpo.py" in first or "serve" in first)
    if "jobs/train.py" in first:
        run = load_run_config(str(path))
        assert run.train.global_batch_size % (run.train.micro_batch_size * run.train.num_workers) == 0
    if "jobs/grpo.py" in first:
        from mrm_ray.rl.config import load_grpo_config

        assert load_grpo_config(str(path)).rollout.group_size >= 2
