"""The package as a user installs it: the built wheel (not editable) in a fresh environment, run from
a directory that is not the checkout. Shipped configs are found by name inside the installed
package, a config error exits 2, and `mrm-ray train --address` submits a short tiny job, with the
installed package's own code, to an autoscaling cluster (`cluster/local.yaml`, Ray's fake
multi-node provider): it asks for `accelerator_type:H100`, which only the training node type has,
so the autoscaler adds two training nodes, and removes them once idle; the run goes to a bucket.

The fresh environment is a new venv whose only link to the project's is a .pth line making the
already-installed dependencies importable (installing torch, Ray and DeepSpeed again would take
minutes and gigabytes); mrm_ray itself comes from the wheel alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers.ray_head import REPO, RayHead, ray_env

pytestmark = pytest.mark.slow
TRAIN_TYPE = "accelerator_type:H100"


def _train_nodes(head: RayHead) -> list[str]:
    return [n["node_id"] for n in head.alive_nodes() if TRAIN_TYPE in (n.get("resources_total") or {})]


def _run(*args, cwd, timeout=300, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=ray_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, a working directory far from the checkout) with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy of the tracked files: building leaves nothing in the checkout
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pip = Path(sys.executable).parent / "pip"
    _run(pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", source, cwd=root)
    (wheel,) = (root / "dist").glob("mrm_ray-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(pip, "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel, cwd=root)
    work = root / "elsewhere"
    work.mkdir()
    return venv / "bin", work


def test_the_wheel_holds_the_configs_and_its_requirements_are_met(installed):
    bin_dir, work = installed
    check = _run(bin_dir / "python", "-c", """
import json, mrm_ray
from importlib import metadata
from packaging.requirements import Requirement
from mrm_ray.config import shipped as presets
unmet = [str(r) for r in map(Requirement, metadata.requires("mrm-ray")) if not r.marker
         and metadata.version(r.name) not in r.specifier]
print(json.dumps({"file": mrm_ray.__file__, "unmet": unmet,
                  "configs": {k: presets.names(k) for k in presets.KINDS}}))
""", cwd=work)
    found = json.loads(check.stdout)
    assert str(REPO) not in found["file"] and "site-packages" in found["file"]
    assert found["unmet"] == []
    assert found["configs"] == {"train": ["qwen2_5_vl_32b", "qwen2_5_vl_3b", "qwen2_5_vl_72b", "qwen2_5_vl_7b",
                                          "qwen3_5_27b", "qwen3_5_35b_a3b", "qwen3_5_9b", "qwen3_vl_235b_a22b",
                                          "qwen3_vl_2b", "qwen3_vl_30b_a3b", "qwen3_vl_32b", "qwen3_vl_4b",
                                          "qwen3_vl_8b", "tiny"],
                                "serve": ["cluster", "tiny"], "grpo": ["qwen2_5_vl_3b", "tiny"],
                                "mixture": ["basereward"]}


def test_every_command_finds_its_config_by_name_from_any_directory(installed):
    bin_dir, work = installed
    mrm = bin_dir / "mrm-ray"
    listing = _run(mrm, "configs", cwd=work).stdout
    assert "train    tiny" in listing and str(REPO) not in listing
    assert "max_steps: 7" in _run(mrm, "train", "--config", "tiny", "--check", "train.max_steps=7", cwd=work).stdout
    assert "serve_config: " in _run(mrm, "grpo", "--check", cwd=work).stdout
    assert "tiny-a" in _run(mrm, "serve", "--check", cwd=work).stdout
    assert "qwen2_5_vl_7b" in _run(mrm, "plan", "qwen2_5_vl_7b", "--gpus", "8", "--gpu-mem", "80", cwd=work).stdout
    bad = _run(mrm, "train", "train.learning_rate=1e-6x", cwd=work, check=False)
    assert bad.returncode == 2 and "train.learning_rate" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def autoscaled_job(installed, own_cluster, s3):
    """`mrm-ray train --address` from the wheel to a fresh autoscaling head; training nodes seen while it ran."""
    bin_dir, work = installed
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    head = RayHead(num_cpus=config["available_node_types"]["ray.head.default"]["resources"]["CPU"],
                   autoscaling_config=config,
                   env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})  # (5 s by default)
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
        out = f"{s3.bucket()}/runs"
        # a text-only Qwen3 on the text task: the default family trains in the README job and test_train_state
        result = _run(bin_dir / "mrm-ray", "train", "--address", head.address, "--config", "tiny",
                      f"output_dir={out}", "name=from-wheel", "model.path=tiny:qwen3", "synthetic.task=colour_text",
                      "synthetic.pairs=128", "train.max_steps=4",
                      "train.eval_every=2", "train.log_every=2",
                      f'train.resources_per_worker={{"{TRAIN_TYPE}": 0.001}}', "train.cpus_per_worker=1",
                      cwd=work, timeout=600, check=False)
        done.set()
        watcher.join()
        deadline = time.time() + 180  # idle_timeout_minutes 0.1, then the autoscaler's own cadence
        while time.time() < deadline and _train_nodes(head):
            time.sleep(2)
        yield {"result": result, "out": out, "seen": seen, "left": _train_nodes(head)}
    finally:
        head.stop()


def test_train_submitted_with_the_installed_code_scales_the_cluster_and_writes_to_a_bucket(autoscaled_job):
    from mrm_ray import storage
    from mrm_ray.model.reward_model import RewardModel

    done, out = autoscaled_job["result"], autoscaled_job["out"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted train as raysubmit_" in done.stdout
    assert f"reward checkpoint: {out}/from-wheel/reward_model" in done.stdout, done.stdout[-3000:]
    model = RewardModel.from_pretrained(storage.local_copy(f"{out}/from-wheel/reward_model"))
    assert model.provenance["step"] in (2, 4) and model.provenance["run_config"]["name"] == "from-wheel"
    assert model.family.name == "qwen3"  # its template and tokenizer came from the wheel's own files
    assert storage.exists(f"{out}/from-wheel/logs/rank1.log")  # every rank's full log, uploaded
    # two workers of 1 CPU each, training nodes of 1 CPU: the autoscaler launched two, and removed them
    assert len(autoscaled_job["seen"]) == 2, autoscaled_job["seen"]
    assert autoscaled_job["left"] == [], "idle training nodes were not removed"
