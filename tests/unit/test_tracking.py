"""Experiment trackers (tracking.py) behind a run's MetricsLog: MLflow's local store and W&B offline get the same
numbers as metrics.jsonl, the config as parameters and artifacts, a later step continues the same tracked runs,
and settings that cannot be honoured are refused when the config is read. No Ray here."""

import json

import pytest

from mrm_ray.config import ConfigError, TrackingConfig, load_run_config, validate
from mrm_ray.run_folder import RunFolder, read_metrics
from helpers.trackers import (mlflow_artifacts, mlflow_history, mlflow_run, run_ids, tracking_config,
                              wandb_artifacts, wandb_config, wandb_history, wandb_records)


def test_metrics_config_and_artifacts_reach_both_trackers(tmp_path):
    tracking = tracking_config(tmp_path)
    folder = RunFolder(tmp_path / "run")
    log = folder.metrics(tracking=tracking, name="run-a", params={"train": {"zero_stage": 2, "lr": 1e-5}, "tags": [1]})
    for step in (1, 2, 3):
        log.event("train", step, {"loss": 1.0 / step, "accuracy": 0.5 + step / 10, "note": "text"}, scalars="train")
    log.event("checkpoint", 3, {"fingerprint": {"x": 1}})  # not a scalar event: metrics.jsonl only
    log.scalar("train/pairs_per_s", 12.5, 3)
    model = tmp_path / "model"
    model.mkdir()
    (model / "reward_config.json").write_text("{}")
    log.artifact(model, kind="model")
    log.close()

    events = [e for e in read_metrics(folder.location) if e["event"] == "train"]
    expected = {e["step"]: e["loss"] for e in events}
    ids = run_ids(folder.local)
    client, run = mlflow_run(tmp_path, ids["mlflow_run_id"])
    assert mlflow_history(client, run.info.run_id, "train/loss") == expected
    assert mlflow_history(client, run.info.run_id, "train/pairs_per_s") == {3: 12.5}
    assert "train/note" not in run.data.metrics and run.data.params["train.zero_stage"] == "2"
    assert run.data.params["tags"] == "[1]" and run.info.run_name == "run-a" and run.info.status == "FINISHED"
    assert mlflow_artifacts(client, run.info.run_id, "model") == ["reward_config.json"]
    records = wandb_records(tmp_path / "wandb", ids["wandb_run_id"])
    assert wandb_history(records, "train/loss") == expected
    assert wandb_config(records)["train"]["zero_stage"] == 2
    assert wandb_artifacts(records) == [("run-a-model", "model")]

    # a later step of the same job (the driver, after the workers) continues the same runs
    again = folder.metrics(tracking=tracking, name="run-a")
    again.event("eval", 4, {"held_out_accuracy": 0.75}, scalars="eval")
    again.close()
    assert run_ids(folder.local) == ids
    assert mlflow_history(client, ids["mlflow_run_id"], "eval/held_out_accuracy") == {4: 0.75}
    assert wandb_history(wandb_records(tmp_path / "wandb", ids["wandb_run_id"]), "eval/held_out_accuracy") == {4: 0.75}


def test_no_tracking_no_tracker_files(tmp_path):
    folder = RunFolder(tmp_path / "run")
    log = folder.metrics(tracking=TrackingConfig(), name="x", params={})
    log.event("train", 1, {"loss": 1.0}, scalars="train")
    log.close()
    assert not (folder.local / "tracking.json").exists() and log.trackers is None


def test_settings_that_cannot_be_honoured_are_refused_naming_them(tmp_path, monkeypatch, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=r"tracking\.mlflow: tracking_uri: .* cannot be written"):
        load_run_config("tiny", [f"tracking.mlflow.tracking_uri=sqlite:///{blocked}/mlflow.db"])
    with pytest.raises(ConfigError, match=r"tracking\.wandb: dir: .* cannot be written"):
        validate(TrackingConfig, {"wandb": {"project": "p", "dir": str(blocked / "w")}}, where="tracking")
    with pytest.raises(ConfigError, match=r"tracking\.wandb\.project: Field required"):
        load_run_config("tiny", ["tracking.wandb.mode=offline"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    from mrm_ray import cli

    assert cli.main(["train", "--check", "tracking.wandb.project=p"]) == 2  # before Ray starts
    assert ("tracking.wandb: the `wandb` package is not installed here: pip install 'mrm-ray[tracking]'"
            in capsys.readouterr().err)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "alembic" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracking\.mlflow: tracking_uri: a sqlite store needs the `alembic`"):
        load_run_config("tiny", [f"tracking.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])


def test_relative_local_stores_are_anchored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = load_run_config("tiny", ["tracking.mlflow.tracking_uri=sqlite:///stores/mlflow.db",
                                   "tracking.wandb.project=p", "tracking.wandb.dir=wb"]).anchored()
    assert run.tracking.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'stores' / 'mlflow.db'}"
    assert run.tracking.wandb.dir == str(tmp_path / "wb")
    assert run.tracking.mlflow.artifacts() == (tmp_path / "stores" / "artifacts").as_uri()
    assert json.loads(json.dumps(run.tracking.artifacts)) is True


def test_metric_names_mlflow_refuses_are_spelled_as_it_takes_them():
    from mrm_ray.tracking import mlflow_name

    assert mlflow_name("eval/mm_rlhf/ensemble: mean/Acc+") == "eval/mm_rlhf/ensemble: mean/Acc_plus"
    assert mlflow_name("eval/x/ensemble.yaml (accuracy_weighted)/Acc") == "eval/x/ensemble.yaml _accuracy_weighted_/Acc"
