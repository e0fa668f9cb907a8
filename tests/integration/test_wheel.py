"""The package as a user installs it: the built wheel (not editable) in a fresh environment, run from
a directory that is not the checkout. Shipped configs are found by name inside the installed
package, a config error exits 2, and `mrm-ray train --address` submits the tiny job, with the
installed package's own code, to a running cluster, writing its run to a bucket.

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
from pathlib import Path

import pytest

from helpers.ray_head import REPO, ray_env

pytestmark = pytest.mark.slow


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
from mrm_ray import presets
unmet = [str(r) for r in map(Requirement, metadata.requires("mrm-ray")) if not r.marker
         and metadata.version(r.name) not in r.specifier]
print(json.dumps({"file": mrm_ray.__file__, "unmet": unmet,
                  "configs": {k: presets.names(k) for k in presets.KINDS}}))
""", cwd=work)
    found = json.loads(check.stdout)
    assert str(REPO) not in found["file"] and "site-packages" in found["file"]
    assert found["unmet"] == []
    assert found["configs"] == {"train": ["qwen2_5_vl_32b", "qwen2_5_vl_3b", "qwen2_5_vl_72b", "qwen2_5_vl_7b", "tiny"],
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


def test_train_submitted_to_a_cluster_with_the_installed_code_writes_to_a_bucket(installed, ray_head, s3):
    from mrm_ray import storage
    from mrm_ray.model.reward_model import RewardModel

    bin_dir, work = installed
    out = f"{s3.bucket()}/runs"
    done = _run(bin_dir / "mrm-ray", "train", "--address", ray_head.address, "--config", "tiny",
                f"output_dir={out}", "name=from-wheel", "synthetic.pairs=128", "train.max_steps=4",
                "train.eval_every=2", "train.log_every=2", cwd=work, timeout=600)
    assert "submitted train as raysubmit_" in done.stdout
    assert f"reward checkpoint: {out}/from-wheel/reward_model" in done.stdout, done.stdout[-3000:]
    model = RewardModel.from_pretrained(storage.local_copy(f"{out}/from-wheel/reward_model"))
    assert model.provenance["step"] in (2, 4) and model.provenance["run_config"]["name"] == "from-wheel"
