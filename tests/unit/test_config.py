"""Run configs: YAML + overrides, typed validation with clear errors, round trip, shipped presets."""

import subprocess
import sys
from pathlib import Path

import pytest

from mrm_ray.config import shipped as presets
from mrm_ray.config import ConfigError, RunConfig, load_run_config, parse_overrides, to_dict, validate

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [(kind, name) for kind in ("train", "serve", "grpo") for name in presets.names(kind)]


def test_overrides_are_typed():
    assert parse_overrides(["a=1", "b=2e-3", "c=true", "d=null", "e=text", "f.g=0.5"]) == {
        "a": 1, "b": 0.002, "c": True, "d": None, "e": "text", "f.g": 0.5}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_nested_overrides_and_round_trip(tmp_path):
    run = load_run_config(None, ["train.zero_stage=3", "model.head.num_layers=1", "train.lora.rank=8",
                                 "output_dir=rel", "model.path=some/dir"])
    assert run.train.zero_stage == 3 and run.model.head.num_layers == 1 and run.train.lora.rank == 8
    assert Path(run.output_dir).is_absolute() and Path(run.model.path).is_absolute()
    assert validate(RunConfig, to_dict(run)) == run


def test_yaml_floats_without_a_dot_are_floats(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  learning_rate: 1e-6\n  head_learning_rate: 2E-5\n")
    run = load_run_config(str(path))
    assert run.train.learning_rate == pytest.approx(1e-6) and isinstance(run.train.learning_rate, float)
    assert run.train.head_learning_rate == pytest.approx(2e-5)


@pytest.mark.parametrize("overrides, expected", [
    (["train.learning_rate=1e-6x"], "train.learning_rate: Input should be a valid number"),
    (["train.epochs=one"], "train.epochs: Input should be a valid number"),
    (["train.learnig_rate=1e-6"], "train.learnig_rate: unknown setting; did you mean learning_rate?"),
    (["model.head.num_layer=1"], "model.head.num_layer: unknown setting; did you mean num_layers?"),
    (["train.lora.rnk=8"], "train.lora.rnk: unknown setting; did you mean rank?"),
    (["trian.epochs=1"], "trian: unknown setting; did you mean train?"),
    (["train.num_workers=0"], "train.num_workers: Input should be greater than or equal to 1 (got 0)"),
    (["train.warmup_ratio=1.5"], "train.warmup_ratio: Input should be less than or equal to 1 (got 1.5)"),
    (["train.zero_stage=4"], "train.zero_stage must be 0, 1, 2 or 3, got 4"),
    (["train.offload_params=true"], "train.offload_params needs zero_stage 3"),
    (["train.global_batch_size=10", "train.micro_batch_size=4"], "must be a multiple of"),
    (["data.image_modes=drop"], "data.image_modes must be one of"),
    (["train.epochs=1", "train.epochs.x=1"], "'epochs' is a setting, not a section"),
])
def test_a_bad_setting_names_its_dotted_path(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, overrides)
    assert expected in str(caught.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_run_config(None, ["train.epochs=one", "model.head.num_layers=0", "loss.nope=1"])
    message = str(caught.value)
    for path in ("train.epochs", "model.head.num_layers", "loss.nope"):
        assert path in message


def test_a_config_file_that_is_not_a_mapping_or_not_yaml(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(str(tmp_path / "broken.yaml"))
    with pytest.raises(ConfigError, match="not a file, and not a shipped name"):
        load_run_config(str(tmp_path / "absent.yaml"))


def test_the_entry_point_exits_2_with_one_clear_error_before_anything_starts():
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "train.py"), "--config", "tiny",
                           "train.learning_rate=1e-6x", "train.epochs=one"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "train.learning_rate" in done.stderr and "train.epochs" in done.stderr
    assert "Traceback" not in done.stderr and "ray" not in done.stdout.lower()


@pytest.mark.parametrize("kind, name", CONFIGS, ids=[f"{k}/{n}" for k, n in CONFIGS])
def test_every_shipped_config_loads_by_name_and_says_how_to_launch(kind, name):
    first = presets.path(kind, name).read_text().splitlines()[0]
    assert first.startswith(f"# mrm-ray {kind} --config {name}")
    if kind == "train":
        run = load_run_config(name)
        assert run.train.global_batch_size % (run.train.micro_batch_size * run.train.num_workers) == 0
    if kind == "grpo":
        from mrm_ray.config import load_grpo_config

        assert load_grpo_config(name).rollout.group_size >= 2
    if kind == "serve":  # the cluster's ensemble lives on its shared storage: its arguments are checked here
        import yaml

        from mrm_ray.config import AppArgs

        validate(AppArgs, yaml.safe_load(presets.path(kind, name).read_text())["applications"][0]["args"])


def test_an_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="no train config 'tiniest'.*qwen2_5_vl_7b, .*qwen3_vl_8b, tiny"):
        load_run_config("tiniest")


def test_every_command_reads_its_settings_through_the_one_loader(tmp_path, capsys):
    """A command's YAML, then its flags, then `a.b=value` overrides; every problem at once, by dotted path with
    the closest key, exit 2 before anything runs (the commands' options were argparse flags of their own)."""
    from mrm_ray.cli import main
    from mrm_ray.config import EvalConfig, load

    (tmp_path / "eval.yaml").write_text("models: {a: tiny:0}\nbench: {mm_rlhf: /data/mm.jsonl}\nbatch_size: 8\n"
                                        "limit: 5\n")
    config = load(EvalConfig, tmp_path / "eval.yaml", ["limit=7"], values={"batch_size": 4, "limit": 6})
    assert (config.batch_size, config.limit, config.models) == (4, 7, {"a": "tiny:0"})  # yaml < flags < overrides
    assert main(["evaluate", "--config", str(tmp_path / "eval.yaml"), "--batch-size", "0", "limt=3",
                 "cpus_per_model=-1"]) == 2
    err = capsys.readouterr().err
    for expected in ("batch_size: Input should be greater than or equal to 1 (got 0)",
                     "limt: unknown setting; did you mean limit?", "cpus_per_model: Input should be greater than 0"):
        assert expected in err, err
    assert main(["ensemble", "fit", "--models", "a=tiny:0", "--data", "trl=x.jsonl", "--method", "mean",
                 "--text-members", "b"]) == 2
    assert "text_members ['b'] are not among the models ['a']" in capsys.readouterr().err
    assert main(["data", "inspect", "basereward", "--model", "tiny", "max_lenght=9"]) == 2
    assert "data.max_lenght: unknown setting; did you mean max_length?" in capsys.readouterr().err
