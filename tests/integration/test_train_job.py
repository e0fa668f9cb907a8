"""The README's main job: `ray job submit ... jobs/train.py --config jobs/configs/tiny.yaml` on a
real Ray head learns the image-only preference with ZeRO-2 on two workers and exports a reward
checkpoint that scores fresh pairs as well. (Resume, killed workers, ZeRO stages and parameter
movement are checked as state in test_train_state.py.)"""

import json
from pathlib import Path

import pytest

from mrm_ray.data.synthetic import image_grounded_pairs

from helpers.ray_head import job_status

pytestmark = pytest.mark.slow
CONFIG = "jobs/configs/tiny.yaml"


def _fresh_accuracy(checkpoint: Path, encoder, n: int = 200) -> float:
    """Accuracy of an exported checkpoint on newly generated pairs (never seen in training)."""
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.local import pairwise_accuracy

    model = RewardModel.from_pretrained(checkpoint).eval()
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(n, seed=99)]
    return pairwise_accuracy(model, pairs, pad_token_id=encoder.pad_token_id)


def test_tiny_job_learns_the_image_only_preference_and_exports(ray_head, tmp_path, encoder):
    from mrm_ray.train.progress import read_metrics

    result = ray_head.submit("jobs/train.py", "--config", CONFIG, f"output_dir={tmp_path}")
    log = result.stdout + result.stderr
    assert job_status(log) == "SUCCEEDED", log[-4000:]
    run = tmp_path / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["held_out_accuracy"] >= 0.9 and summary["final_step"] == summary["total_steps"] == 800, summary
    assert f"reward checkpoint: {run / 'reward_model'}" in log
    meta = json.loads((run / "reward_model" / "reward_config.json").read_text())
    assert meta["score_std"] > 0 and meta["provenance"]["run_config"]["train"]["zero_stage"] == 2
    assert meta["provenance"]["step"] == summary["step"]
    assert _fresh_accuracy(run / "reward_model", encoder) >= 0.9
    events = read_metrics(run)
    train = [e for e in events if e["event"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 801))
    early, late = (sum(e["loss"] for e in part) / len(part) for part in (train[:50], train[-50:]))
    assert late < 0.5 * early, (early, late)  # the training loss itself fell, not only held-out accuracy
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == list(range(100, 801, 100))
    assert max(e["held_out_accuracy"] for e in evals) == summary["held_out_accuracy"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "quarantine.jsonl").is_file()
