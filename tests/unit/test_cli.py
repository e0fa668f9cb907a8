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


def test_evaluate_refuses_members_that_cannot_score_before_ray_starts(tmp_path, capsys):
    """A text-only member an ensemble file routes images, or a folder that is no reward checkpoint: exit 2
    with the member and what to change, before Ray starts (a text-only member of --models is fine)."""
    import ray

    from mrm_ray.cli import main
    from mrm_ray.config import EnsembleConfig, EnsembleMember
    from mrm_ray.ensemble import save_ensemble
    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint

    text = build_tiny_reward_checkpoint(tmp_path / "qwen3-reward", seed=1, family="qwen3")
    ensemble = save_ensemble(EnsembleConfig(members=[EnsembleMember(name="vl", path="tiny:0"),
                                                     EnsembleMember(name="text", path=str(text))]),
                             tmp_path / "ensemble.yaml")
    bench = ["--bench", f"mm_rlhf={tmp_path / 'bench.jsonl'}", "--out", str(tmp_path / "report")]
    assert main(["evaluate", "--ensemble", str(ensemble), *bench]) == 2
    err = capsys.readouterr().err
    assert "member text: " in err and "text-only qwen3" in err and "modalities: [text]" in err, err
    (tmp_path / "plain").mkdir()
    assert main(["evaluate", "--models", f"t={text}", f"p={tmp_path / 'plain'}", *bench]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "plain") in err and "member text" not in err, err
    assert not ray.is_initialized() and not (tmp_path / "report").exists()


def test_score_reads_any_format_by_what_the_file_holds_and_fails_when_it_reads_nothing(tmp_path, tiny_checkpoint,
                                                                                     capsys):
    """A TRL file (`prompt`, `chosen`, `rejected`) is read as one (it was read as chat messages: 0 of 0 pairs,
    exit 0); `--reader` names another; a file with nothing readable exits 1 saying why."""
    import json

    from mrm_ray.cli import main
    from mrm_ray.data.readers import detect_reader

    trl = tmp_path / "pairs.jsonl"
    trl.write_text("".join(json.dumps({"prompt": f"Is {c} a colour?", "chosen": "Yes.", "rejected": "No."}) + "\n"
                           for c in ("red", "blue", "green")))
    assert detect_reader(trl) == "trl"
    assert main(["score", "--model", str(tiny_checkpoint), "--data", str(trl)]) == 0
    out = capsys.readouterr().out
    assert "scored 3 of 3 pairs from" in out and "(trl)" in out
    assert len(re.findall(r"^pairs\.jsonl:\d+\s+-?\d+\.\d+\s+-?\d+\.\d+\s+(?:yes|no)$", out, re.M)) == 3, out
    sharegpt = tmp_path / "conversations.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi?"}],
                                     "chosen": {"from": "gpt", "value": "Hello."},
                                     "rejected": {"from": "gpt", "value": "Go away."}}]))
    assert main(["score", "--model", str(tiny_checkpoint), "--data", str(sharegpt), "--reader", "sharegpt"]) == 0
    assert "scored 1 of 1 pairs" in capsys.readouterr().out
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "p", "chosen": "same", "rejected": "same"}\n{not json\n')
    assert main(["score", "--model", str(tiny_checkpoint), "--data", str(broken), "--reader", "trl"]) == 1
    err = capsys.readouterr().err
    assert "chosen identical to rejected" in err and "malformed JSON" in err and "no pairs could be read" in err
