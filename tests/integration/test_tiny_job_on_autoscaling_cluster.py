"""The README's main job on Ray's own autoscaler: `cluster/local.yaml` (the fake multi-node
provider) adds training nodes when `ray job submit ... jobs/train.py --config tiny`
asks for `accelerator_type:H100`, which only that node type has; on them the tiny model learns
the image-only preference with ZeRO-2 on two workers and exports a reward checkpoint that scores
fresh pairs as well; the idle training nodes are removed afterwards.

(One job for both: each costs minutes here. Resume, killed workers, ZeRO stages and parameter
movement are checked as state in test_train_state.py.)"""

import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml

from mrm_ray.data.synthetic import image_grounded_pairs

from helpers.ray_head import REPO, RayHead, job_status

pytestmark = pytest.mark.slow
TRAIN_TYPE = "accelerator_type:H100"


def _train_nodes(head: RayHead) -> list[str]:
    return [n["node_id"] for n in head.alive_nodes() if TRAIN_TYPE in (n.get("resources_total") or {})]


def _fresh_accuracy(checkpoint: Path, encoder, n: int = 200) -> float:
    """Accuracy of an exported checkpoint on newly generated pairs (never seen in training)."""
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.local import pairwise_accuracy

    model = RewardModel.from_pretrained(checkpoint).eval()
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(n, seed=99)]
    return pairwise_accuracy(model, pairs, pad_token_id=encoder.pad_token_id)


@pytest.fixture(scope="module")
def job(own_cluster, tmp_path_factory):
    """The tiny job, submitted to a fresh autoscaling head; which training nodes were seen while it ran."""
    out = tmp_path_factory.mktemp("tiny-job")
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    head = RayHead(num_cpus=config["available_node_types"]["ray.head.default"]["resources"]["CPU"],
                   autoscaling_config=config, env={"RAY_FAKE_CLUSTER": "1"})
    try:
        assert _train_nodes(head) == []  # min_workers 0: nothing until a job asks
        seen: set[str] = set()
        done = threading.Event()

        def watch():
            while not done.is_set():
                seen.update(_train_nodes(head))
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = head.submit("jobs/train.py", "--config", "tiny", f"output_dir={out}",
                             f'train.resources_per_worker={{"{TRAIN_TYPE}": 0.001}}', "train.cpus_per_worker=1")
        done.set()
        watcher.join()
        deadline = time.time() + 180  # idle_timeout_minutes 0.1, then the autoscaler's own cadence
        while time.time() < deadline and _train_nodes(head):
            time.sleep(2)
        job_id = re.search(r"Job '(raysubmit_\w+)' submitted", result.stdout + result.stderr)
        yield {"log": result.stdout + result.stderr, "run": out / "tiny", "seen": seen,
               "left": _train_nodes(head), "job_log": head.logs(job_id.group(1)) if job_id else ""}
    finally:
        head.stop()


def test_training_nodes_scale_up_for_the_job_and_down_after(job):
    assert job_status(job["log"]) == "SUCCEEDED", job["log"][-4000:]
    # two workers of 1 CPU each, training nodes of 1 CPU: the autoscaler launched two
    assert len(job["seen"]) == 2, job["seen"]
    assert job["left"] == [], "idle training nodes were not removed"


def test_the_job_learns_the_image_only_preference_and_exports(job, encoder):
    from mrm_ray.train.progress import read_metrics

    assert job_status(job["log"]) == "SUCCEEDED", job["log"][-4000:]
    run = job["run"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_accuracy"] >= 0.9 and summary["final_step"] == summary["total_steps"] == 400, summary
    assert f"reward checkpoint: {run / 'reward_model'}" in job["log"]
    meta = json.loads((run / "reward_model" / "reward_config.json").read_text())
    assert meta["score_std"] > 0 and meta["provenance"]["run_config"]["train"]["zero_stage"] == 2
    assert meta["provenance"]["step"] == summary["step"]
    assert _fresh_accuracy(run / "reward_model", encoder) >= 0.9
    events = read_metrics(run)
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 401))
    early, late = (sum(e["loss"] for e in part) / len(part) for part in (train[:50], train[-50:]))
    assert late < 0.5 * early, (early, late)  # the training loss itself fell, not only held-out accuracy
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == list(range(100, 401, 100))
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
    steps = [int(m.group(1)) for line in log if (m := re.search(r"\[train\] step (\d+)/400 ", line))]
    assert steps == list(range(25, 401, 25)), steps  # every log_every steps, each once
    evals = [int(m.group(1)) for line in log if (m := re.search(r"\[eval\] step (\d+) ", line))]
    assert evals == [100, 200, 300, 400], evals
    assert sum(line.startswith("reward checkpoint: ") for line in log) == 1
    assert sum(line.startswith("held-out accuracy: ") for line in log) == 1
    logs = job["run"] / "logs"
    assert {p.name for p in logs.iterdir()} >= {"driver.log", "rank0.log", "rank1.log"}
    assert "DeepSpeed" in (logs / "rank0.log").read_text()  # the engine's configuration, in full
