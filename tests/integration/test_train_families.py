"""The training job (Ray Train, two workers, DeepSpeed ZeRO-2) on every other family's tiny checkpoint:
Qwen2-VL, Qwen3-VL, Qwen3.5 and the two mixture-of-experts siblings on the image task, Qwen2 on the text task. A short run each: it trains
with finite losses, both ranks log, and the exported reward checkpoint is of that family.

Opt-in (MRM_TEST_ALL_FAMILIES=1, about 5 minutes on 2 cores: 65-82 s a family) to keep CI short: CI runs this job on
Qwen2.5-VL (test_readme_job.py, test_train_state.py) and Qwen3 (test_wheel.py), and every family on
the worker's own ZeRO-2 engine in one process (tests/unit/train/test_model_setup.py)."""

import os

import numpy as np
import pytest

from mrm_ray.config import load_run_config
from mrm_ray.run_folder import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("MRM_TEST_ALL_FAMILIES") != "1",
    reason="2-worker training runs of Qwen2-VL, Qwen3-VL, Qwen3.5, Qwen2 and the MoE siblings: set MRM_TEST_ALL_FAMILIES=1 "
           "(CI trains Qwen2.5-VL and Qwen3 this way, and every family on the worker's engine)")]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5", "qwen2", "qwen3_vl_moe", "qwen3_5_moe"])
def test_the_training_job_on_each_family(ray_cluster, family, tmp_path):
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.launch import prepare_data, resolve_model, run_training

    task = "colour_text" if family == "qwen2" else "colour"
    run = resolve_model(load_run_config("tiny", [
        f"output_dir={tmp_path}", f"name={family}", f"model.path=tiny:{family}", f"synthetic.task={task}",
        "synthetic.pairs=128", "train.max_steps=4", "train.eval_every=4", "train.log_every=1"]))
    summary = run_training(run, data=prepare_data(run))
    assert summary.final_step == 4 and summary.checkpoint is not None
    losses = [e["loss"] for e in read_metrics(tmp_path / family) if e["event"] == "train"]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert (tmp_path / family / "logs" / "rank1.log").is_file()  # two workers
    model = RewardModel.from_pretrained(summary.checkpoint)
    assert model.family.name == family
    config = model.provenance["run_config"]["train"]
    assert (config["zero_stage"], config["num_workers"]) == (2, 2)
    assert 0.0 <= summary.held_out_accuracy <= 1.0
