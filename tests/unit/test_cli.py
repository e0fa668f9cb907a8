"""The `mrm-ray` console command, run as a user runs it."""

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mrm_ray.cli import build_parser


def _run(*args, env=None):
    exe = Path(sys.executable).with_name("mrm-ray")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mrm_ray.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300, env=env)


def test_tiny_command_writes_the_same_checkpoint_as_the_fixture(tmp_path, tiny_checkpoint):
    result = _run("tiny", str(tmp_path / "t"), "--seed", "0")
    assert result.returncode == 0, result.stderr
    assert "written to" in result.stdout
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "t" / "model.safetensors") == digest(tiny_checkpoint / "model.safetensors")


def test_score_command_on_the_real_rlaif_v_pairs(shared_data, tiny_checkpoint):
    result = _run("score", "--model", str(tiny_checkpoint), "--data",
                  str(shared_data / "rlaif-v-sample" / "rlaif-v.jsonl"), "--limit", "4")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^(rlaif-v-\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(yes|no)$", result.stdout, re.M)
    assert len(rows) == 4
    assert all((float(c) > float(r)) == (ok == "yes") for _, c, r, ok in rows)
    n_yes = sum(ok == "yes" for *_, ok in rows)
    assert f"pairwise accuracy {n_yes / 4:.2%} ({n_yes}/4)" in result.stdout


def test_parser_rejects_unknown_commands():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nope"])
