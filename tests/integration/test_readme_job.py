"""The README's main job, exactly as the README runs it: `ray job submit --working-dir . -- python
jobs/train.py --config tiny` on a `ray start --head`. The tiny model learns the image-only
preference with ZeRO-2 on two workers and exports a reward checkpoint that scores fresh pairs as
well, and the job's log is what a person wants to read.

(Autoscaling is checked with the installed wheel's `mrm-ray train --address` in test_wheel.py;
resume, killed workers, ZeRO stages and parameter movement as state in test_train_state.py.)"""

import json
import re
from pathlib import Path

import pytest

from mrm_ray.data.synthetic import image_grounded_pairs

from helpers.ray_head import job_status

pytestmark = pytest.mark.slow


def _fresh_accuracy(checkpoint: Path, encoder, image_size: int, n: int = 200) -> float:
    """Accuracy of an exported checkpoint on newly generated pairs (never seen in training), drawn as the
    run's were."""
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.local import pairwise_accuracy

    model = RewardModel.from_pretrained(checkpoint).eval()
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(n, seed=99, size=image_size)]
    return pairwise_accuracy(model, encoder, pairs)


@pytest.fixture(scope="module")
def job(ray_head, tmp_path_factory):
    """The README job on the shared head, and what `ray job logs` shows of it."""
    out = tmp_path_factory.mktemp("tiny-job")
    result = ray_head.submit("jobs/train.py", "--config", "tiny", f"output_dir={out}")
    log = result.stdout + result.stderr
    job_id = re.search(r"Job '(raysubmit_\w+)' submitted", log)
    return {"log": log, "run": out / "tiny", "job_log": ray_head.logs(job_id.group(1)) if job_id else ""}


def test_the_job_learns_the_image_only_preference_and_exports(job, encoder):
    from mrm_ray.run_folder import read_metrics

    assert job_status(job["log"]) == "SUCCEEDED", job["log"][-4000:]
    run = job["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_accuracy"] >= 0.9 and summary["final_step"] == summary["total_steps"] == 300, summary
    assert f"reward checkpoint: {run / 'reward_model'}" in job["log"]
    meta = json.loads((run / "reward_model" / "reward_config.json").read_text())
    assert meta["score_std"] > 0 and meta["provenance"]["run_config"]["train"]["zero_stage"] == 2
    assert meta["provenance"]["step"] == summary["step"]
    image_size = meta["provenance"]["run_config"]["synthetic"]["image_size"]
    assert _fresh_accuracy(run / "reward_model", encoder, image_size) >= 0.9
    events = read_metrics(run)
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 301))
    early, late = (sum(e["loss"] for e in part) / len(part) for part in (train[:50], train[-50:]))
    assert late < 0.5 * early, (early, late)  # the training loss itself fell, not only held-out accuracy
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == list(range(100, 301, 100))
    assert max(e["held_out_accuracy"] for e in evals) == summary["held_out_accuracy"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "quarantine.jsonl").is_file()


def test_the_job_log_is_progress_and_results_once_each_and_the_rest_is_in_the_run_directory(job):
    """`ray job logs` of the README job fits on two screens: no progress bars (Ray Data's per epoch from
    every worker, transformers'), each progress and eval line once, the summary; library chatter goes
    to the run directory's logs/."""
    log = job["job_log"].splitlines()
    assert 0 < len(log) <= 100, "\n".join(log)
    assert not [line for line in log if "it/s]" in line or "Running Dataset" in line or "Running: " in line], log
    steps = [int(m.group(1)) for line in log if (m := re.search(r"\[train\] step (\d+)/300 ", line))]
    assert steps == list(range(25, 301, 25)), steps  # every log_every steps, each once
    evals = [int(m.group(1)) for line in log if (m := re.search(r"\[eval\] step (\d+) ", line))]
    assert evals == [100, 200, 300], evals
    assert sum(line.startswith("reward checkpoint: ") for line in log) == 1
    assert sum(line.startswith("held-out accuracy: ") for line in log) == 1
    logs = job["run"] / "logs"
    assert {p.name for p in logs.iterdir()} >= {"driver.log", "rank0.log", "rank1.log"}
    assert "DeepSpeed" in (logs / "rank0.log").read_text()  # the engine's configuration, in full
