"""Ray's own autoscaler on one machine: `cluster/local.yaml` (fake multi-node provider) adds
training nodes when `ray job submit ... jobs/train.py` asks for `accelerator_type:H100`, which
only that node type has, and removes them after the idle timeout."""

import threading
import time

import pytest
import yaml

from helpers.ray_head import REPO, RayHead, job_status

pytestmark = pytest.mark.slow
TRAIN_TYPE = "accelerator_type:H100"


def _train_nodes(head: RayHead) -> list[str]:
    return [n["node_id"] for n in head.alive_nodes() if TRAIN_TYPE in (n.get("resources_total") or {})]


def test_training_job_scales_training_nodes_up_and_down(own_cluster, tmp_path):
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
        result = head.submit("jobs/train.py", "--config", "jobs/configs/tiny.yaml", f"output_dir={tmp_path}",
                             "name=scaled", f'train.resources_per_worker={{"{TRAIN_TYPE}": 0.001}}',
                             "train.cpus_per_worker=1", "train.max_steps=10", "train.eval_every=10",
                             "synthetic.pairs=96")
        done.set()
        watcher.join()
        log = result.stdout + result.stderr
        assert job_status(log) == "SUCCEEDED", log[-4000:]
        assert "[train] step 10/10" in log
        # two workers of 1 CPU each, training nodes of 1 CPU: the autoscaler launched two
        assert len(seen) == 2, seen
        deadline = time.time() + 180  # idle_timeout_minutes 0.25, then the autoscaler's own cadence
        while time.time() < deadline and _train_nodes(head):
            time.sleep(2)
        assert _train_nodes(head) == [], "idle training nodes were not removed"
    finally:
        head.stop()
