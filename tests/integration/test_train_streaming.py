"""Training streamed from a mixture, on a cluster the run fills: the held-out split is read at every evaluation
while the train split's stream is still running and holds every CPU the trainers leave, and the run goes
through all its evaluations (it hung at the first one when the held-out read needed CPUs of its own).

The same run trains with `loss.length_normalize` (it crashed at its first held-out evaluation, which called
the loss without the responses' lengths), and with ZeRO-0, so one Ray Train run covers all three; it is tracked
in MLflow (a local store) and W&B (offline), which get metrics.jsonl's numbers and the exported model, and the
exported model's card holds the run's numbers."""

import json
from pathlib import Path

import pytest

from mrm_ray.config import load_run_config
from mrm_ray.run_folder import read_metrics
from mrm_ray.train.launch import write_synthetic_source
from helpers.trackers import (mlflow_artifacts, mlflow_history, mlflow_run, run_ids, tracking_overrides,
                                    wandb_artifacts, wandb_history, wandb_records)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # a hang fails here, not after the suite's 20 minutes
PAIRS, HELD_OUT = 400, 0.1
STEPS = 3


def test_a_streamed_run_on_a_full_cluster_goes_through_every_evaluation(ray_cluster, tmp_path):
    source = write_synthetic_source(tmp_path / "data", pairs=PAIRS, task="colour", seed=3, image_size=84)
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(f"name: streamed\nheld_out_fraction: {HELD_OUT}\nsources:\n"
                       f"  - {{name: colour, reader: chat_messages, path: {source}}}\n")
    total_cpus = ray_cluster.cluster_resources()["CPU"]
    # the trainers take all but one CPU; the train stream's read tasks and encoding actor (0.5 each) the last one
    run = load_run_config("tiny", [f"output_dir={tmp_path / 'runs'}", "name=streamed", f"mixture={mixture}",
                                   "cache_encoded=false", "preprocess_cpus=0.5",
                                   f"train.cpus_per_worker={(total_cpus - 1) / 2}", f"train.max_steps={STEPS}",
                                   "train.eval_every=1", "train.log_every=1", "loss.length_normalize=true",
                                   "train.zero_stage=0", *tracking_overrides(tmp_path / "trackers")])
    from ray.data import DataContext, ExecutionResources

    from mrm_ray.train.launch import run_training

    # a store budget a real mixture's images always fill: the train stream stays running (backpressured),
    # its actor and tasks held, when the evaluations come
    context = DataContext.get_current()
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = ExecutionResources(object_store_memory=16 * 2**20)
    try:
        summary = run_training(run)
    finally:
        context.execution_options.resource_limits = limits
    assert summary.final_step == STEPS and summary.checkpoint is not None
    events = read_metrics(summary.run_dir)
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, STEPS + 1))
    evals = [e for e in events if e["event"] == "eval"]
    held_out = sum(c["held_out"] for c in summary.counts.values())
    assert [e["step"] for e in evals] == list(range(1, STEPS + 1))
    # every evaluation read the whole held-out split (all but what does not fill a batch on every worker)
    assert all(held_out - 2 * 8 < e["held_out_pairs"] <= held_out for e in evals), (held_out, evals)
    assert all(0 < e["held_out_loss"] < 2 for e in evals)  # the length-normalised loss, finite
    meta = json.loads((Path(summary.checkpoint) / "reward_config.json").read_text())
    assert meta["provenance"]["run_config"]["loss"]["length_normalize"] is True
    # the exported model's card: front matter that parses, the run's own numbers
    import yaml

    card = (Path(summary.checkpoint) / "README.md").read_text()
    fields = yaml.safe_load(card.split("---\n")[1])
    assert fields["datasets"] == sorted(summary.counts) == ["colour"]
    (held,) = fields["model-index"][0]["results"]
    assert held["metrics"][0]["value"] == summary.held_out_accuracy == meta["provenance"]["held_out_accuracy"]
    assert meta["provenance"]["data_counts"] == summary.counts
    c = summary.counts["colour"]
    assert (f"| colour | {c['available']} | {c['rejected']} | {c['mixture']} | {c['train']} | {c['held_out']} | "
            in card)
    assert "| DeepSpeed | ZeRO-0 on 2 workers" in card and "length normalisation on" in card
    # the trackers: rank 0's numbers are metrics.jsonl's, the config its parameters, the driver's export an artifact
    root, ids = tmp_path / "trackers", run_ids(summary.run_dir)
    losses = {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    held = {e["step"]: e["held_out_accuracy"] for e in evals}
    client, tracked = mlflow_run(root, ids["mlflow_run_id"])
    assert mlflow_history(client, ids["mlflow_run_id"], "train/loss") == losses
    assert mlflow_history(client, ids["mlflow_run_id"], "eval/held_out_accuracy") == held
    assert tracked.data.params["train.zero_stage"] == "0" and tracked.data.params["name"] == "streamed"
    assert {"README.md", "reward_config.json", "model.safetensors"} <= set(
        mlflow_artifacts(client, ids["mlflow_run_id"], "model"))
    records = wandb_records(root / "wandb", ids["wandb_run_id"])
    assert wandb_history(records, "train/loss") == losses and wandb_history(records, "eval/held_out_accuracy") == held
    assert ("streamed-model", "model") in wandb_artifacts(records)
