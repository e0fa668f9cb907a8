"""GRPO on Ray against the served reward ensemble: `ray job submit jobs/grpo.py` learns (the
held-out served reward rises), and a reward service that blinks or stays down is survived or
stops the run with a resumable checkpoint."""

import json
import socket

import pytest
import yaml

from helpers.flaky_proxy import FlakyProxy
from mrm_ray import storage
from mrm_ray.run_folder import read_metrics
from helpers.ray_head import job_status
from helpers.trackers import (mlflow_artifacts, mlflow_history, mlflow_run, run_ids, tracking_overrides,
                              wandb_artifacts, wandb_history, wandb_records)
from mrm_ray.config.shipped import path as shipped

SERVE_CONFIG = shipped("serve", "tiny")
STEPS = 12


def _read(uri: str) -> str:
    return storage.local_copy(uri).read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def grpo_job(ray_head, tmp_path_factory, reward_checkpoints):
    """The shipped tiny GRPO job, deploying two tiny reward members on the shared head's Serve
    (kept deployed: the fault test below reaches them through a proxy), optimising their conservative `uwo`
    aggregate and measuring the rule reward as gold."""
    tmp = tmp_path_factory.mktemp("grpo")
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"]["port"] = _free_port()
    serve_config = tmp / "serve.yaml"
    serve_config.write_text(yaml.safe_dump(config))
    out = ray_head.submit(
        "jobs/grpo.py", "--config", "tiny", f"output_dir={tmp}", f"steps={STEPS}",
        "eval_every=12", "checkpoint_every=6", f"reward.members=[{reward_checkpoints[0]},{reward_checkpoints[1]}]",
        f"reward.serve_config={serve_config}", "reward.keep_deployed=true", "reward.method=uwo",
        "reward.uncertainty_coef=0.5", "reward.gold=rule", *tracking_overrides(tmp / "trackers"), timeout=600)
    log = out.stdout + out.stderr
    url = f"http://127.0.0.1:{config['http_options']['port']}/grpo-tiny-reward"
    yield {"log": log, "status": job_status(log), "run_dir": tmp / "grpo-tiny", "url": url,
           "trackers": tmp / "trackers"}
    ray_head.serve_shutdown()  # leave nothing running for the next module


def test_job_raises_the_held_out_served_reward(grpo_job):
    assert grpo_job["status"] == "SUCCEEDED", grpo_job["log"][-4000:]
    summary = json.loads((grpo_job["run_dir"] / "summary.json").read_text())
    curve = summary["curve"]
    assert [p["step"] for p in curve] == [0, 12] and summary["reward_key"] == "served_reward"
    rise = curve[-1]["served_reward"] - curve[0]["served_reward"]
    # clearly: by at least 4 standard errors of the held-out mean (16 prompts x 4 samples), and by 0.02
    assert rise >= max(0.02, 4 * curve[0]["sem"]), f"held-out served reward did not rise clearly: {curve}"
    assert summary["rise"] == pytest.approx(rise) and summary["rise_in_standard_errors"] >= 4
    # the driver's progress line carries the metrics users expect, per member too
    for key in ("reward ", "served ", "disagreement", "kl ", "len ", "rollout ", "reward wait"):
        assert key in grpo_job["log"], key
    assert f"step {STEPS}/{STEPS}" in grpo_job["log"]
    run = grpo_job["run_dir"]
    assert (run / "checkpoints" / f"step-{STEPS}" / "model.safetensors").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # the one run folder: the resolved config (beside every checkpoint too), every step's numbers, every log
    config = json.loads((run / "run_config.json").read_text())
    assert config["steps"] == STEPS and config["policy"].endswith("qwen2_5_vl@0")
    assert json.loads((run / "checkpoints" / f"step-{STEPS}" / "run_config.json").read_text()) == config
    events = read_metrics(run)
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, STEPS + 1))
    assert all({"reward/mean", "reward/disagreement", "policy/kl"} <= set(e) for e in train)
    assert [e["step"] for e in events if e["event"] == "eval"] == [0, STEPS]
    # robust rewards: what is optimised (uwo) and what is measured (gold), the disagreement, each member's drift
    # and the KL to the starting policy, every step, in metrics.jsonl, TensorBoard and summary.json's curves
    from mrm_ray.serve.deploy import member_names

    members = {f"reward/member/{n}" for n in member_names(config["reward"]["members"])}
    names = {"reward/mean", "reward/gold", "reward/gold_missing", "reward/disagreement", "policy/kl", *members}
    assert len(members) == 2
    assert all(names <= set(e) for e in train) and all(e["reward/gold_missing"] == 0 for e in train)
    assert all(0.0 <= e["reward/gold"] <= 1.0 and e["reward/disagreement"] > 0 for e in train)
    assert config["reward"]["method"] == "uwo" and config["reward"]["gold"] == "rule"
    curves = summary["curves"]
    assert curves["step"] == list(range(1, STEPS + 1)) and names <= set(curves)
    for name in names:
        assert curves[name] == [e[name] for e in train], name
    assert all(p["gold_reward"] is not None and p["gold_missing"] == 0 and p["disagreement"] > 0 for p in curve)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tensorboard")).Reload()
    for name in names:
        assert [e.step for e in board.Scalars(name)] == list(range(1, STEPS + 1)), name
    assert [e.value for e in board.Scalars("reward/gold")] == pytest.approx(curves["reward/gold"], abs=1e-6)
    assert {p.name for p in (run / "logs").iterdir()} >= {"driver.log", "learner.log", "rollout0.log"}
    # the job scored through the app's DeploymentHandle (same cluster, no HTTP), and measured how much of each
    # step waited on rewards
    assert config["reward"]["url"] == "serve://grpo-tiny-reward"
    assert all(0.0 <= e["time/reward_wait_fraction"] < 1.0 and 0.0 <= e["time/reward_hidden_fraction"] <= 1.0
               for e in train)
    assert summary["mean_over_steps"]["time/reward_wait_fraction"] == pytest.approx(
        sum(e["time/reward_wait_fraction"] for e in train) / len(train))


def test_job_is_tracked_in_mlflow_and_wandb(grpo_job):
    """`tracking:` sends every step's numbers (those of metrics.jsonl), the config, the summary and the last
    policy checkpoint to an MLflow local store and an offline W&B run."""
    assert grpo_job["status"] == "SUCCEEDED", grpo_job["log"][-4000:]
    run, root = grpo_job["run_dir"], grpo_job["trackers"]
    events = read_metrics(run)
    ids = run_ids(run)
    client, tracked = mlflow_run(root, ids["mlflow_run_id"])
    records = wandb_records(root / "wandb", ids["wandb_run_id"])
    for name in ("reward/mean", "reward/gold", "reward/disagreement", "policy/kl"):
        expected = {e["step"]: e[name] for e in events if e["event"] == "train"}
        assert mlflow_history(client, ids["mlflow_run_id"], name) == expected, name
        assert wandb_history(records, name) == expected, name
    served = {e["step"]: e["served_reward"] for e in events if e["event"] == "eval"}
    assert mlflow_history(client, ids["mlflow_run_id"], "eval/served_reward") == served
    assert tracked.data.params["reward.method"] == "uwo" and tracked.data.params["steps"] == str(STEPS)
    assert mlflow_artifacts(client, ids["mlflow_run_id"], "report") == ["summary.json"]
    assert "model.safetensors" in mlflow_artifacts(client, ids["mlflow_run_id"], "model")
    assert {kind for _, kind in wandb_artifacts(records)} == {"report", "model"}


def test_blinking_service_is_retried_and_a_dead_one_stops_with_a_resumable_checkpoint(grpo_job, ray_cluster, s3):
    """The run folder is in a bucket: the stopped run's checkpoint is uploaded there, and the same command again
    resumes from it (fetched by the learner) and continues its curve."""
    from mrm_ray.config import load_grpo_config
    from mrm_ray.rl.loop import run_grpo

    assert grpo_job["status"] == "SUCCEEDED", grpo_job["log"][-4000:]
    proxy = FlakyProxy(grpo_job["url"])
    # the policy here is a tiny Qwen3-VL (the job above: the default Qwen2.5-VL), so the whole loop runs on two families
    out = f"{s3.bucket()}/runs"
    overrides = [f"output_dir={out}", "name=faults", "policy=tiny:qwen3_vl", "steps=3", "eval_every=3", "checkpoint_every=1",
                 f"reward.url={proxy.url}", "reward.members=[]", "reward.max_wait_s=4", "prompts.held_out=4",
                 "reward.method=min", "reward.max_disagreement=0.05",
                 "rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.eval_samples=2", "rollout.workers=1"]
    cfg = load_grpo_config("tiny", overrides)
    # one call per prompt: held-out eval 4, step 1 4; step 2's first 4 calls get 503 (retried), then
    # after step 2's 4 successful calls the service stays down: step 3 cannot be scored
    proxy.schedule(outage_after=8, outage_requests=4, down_after=12)
    try:
        stopped = run_grpo(cfg)
        assert proxy.refused >= 4 + 1
        assert stopped.stopped and "unavailable" in stopped.stopped and "same command" in stopped.stopped
        checkpoints = f"{out}/faults/checkpoints"
        assert json.loads(_read(f"{checkpoints}/step-2/learner_state.json")) == {"step": 2}
        assert not storage.exists(f"{checkpoints}/step-3")  # the failed step was not applied
        assert stopped.checkpoint == f"{checkpoints}/step-2"

        proxy.up()
        resumed = run_grpo(cfg)  # the same command again
        assert resumed.stopped is None
        assert [p["step"] for p in resumed.curve] == [0, 3]  # the curve continues across the restart
        assert json.loads(_read(f"{checkpoints}/step-3/learner_state.json")) == {"step": 3}
        assert not storage.exists(f"{checkpoints}/step-1")  # the two latest are kept, in the bucket too
        summary = json.loads(_read(f"{out}/faults/summary.json"))
        assert summary["curve"] == resumed.curve and summary["run_dir"] == f"{out}/faults"
        # the per-step curves continue across the restart too; the disagreement filter counted what it dropped
        # (16 rollouts a step: two tiny random members disagree past 0.05 on some)
        assert summary["curves"]["step"] == [1, 2, 3]
        assert all(0 <= n <= 16 for n in summary["curves"]["reward/filtered"])
        assert sum(summary["curves"]["reward/filtered"]) > 0
    finally:
        proxy.close()
