"""RL prompt files: our layout and veRL's; bad rows quarantined with reasons, good rows kept."""

import base64
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mrm_ray.config import load_grpo_config
from mrm_ray.rl.prompts import load_prompts, read_prompt_file, synthetic_prompts
from mrm_ray.run_folder import RunFolder

from helpers.images import png

RED = png((220, 20, 20))


def test_synthetic_prompts_carry_the_answer_in_the_picture():
    prompts = synthetic_prompts(8, seed=0)
    assert all(p["answer"] in {"red", "green", "blue", "yellow"} and len(p["images"]) == 1 for p in prompts)
    counts = synthetic_prompts(4, seed=0, task="count")
    assert all(p["answer"] in {"one", "two", "three", "four"} for p in counts)


def test_jsonl_with_both_layouts_and_every_kind_of_bad_row(tmp_path):
    (tmp_path / "outside.png").write_bytes(RED)  # a real image, but not under the prompt file's folder
    tmp_path = tmp_path / "prompts"
    tmp_path.mkdir()
    (tmp_path / "red.png").write_bytes(RED)
    rows = [
        {"id": "ours", "prompt": "What colour?", "images": ["red.png"], "answer": "red"},
        {"prompt": [{"role": "user", "content": "<image>What colour is it?"}], "images": [{"bytes": RED, "path": None}],
         "reward_model": {"ground_truth": "red", "style": "rule"}},
        {"prompt": "Text only", "answer": "42"},
        {"images": ["red.png"]},
        {"prompt": "x", "images": ["missing.png"]},
        {"prompt": "x", "images": [{"bytes": base64.b64encode(b"not a png").decode()}]},
        {"prompt": [{"role": "user", "content": "<image><image>two?"}], "images": ["red.png"]},
        {"prompt": "x", "images": ["../outside.png"]},
        {"prompt": "x", "images": [str(tmp_path.parent / "outside.png")]},
    ]
    lines = [json.dumps(r) if i != 1 else "" for i, r in enumerate(rows)]
    lines[1] = json.dumps({**rows[1], "images": [{"path": "red.png"}]})  # JSON holds paths, Parquet bytes
    lines.insert(3, "{not json")
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    good, bad = read_prompt_file(path)
    assert [g["answer"] for g in good] == ["red", "red", "42"]
    assert good[1]["prompt"][0]["content"] == [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]
    assert good[0]["images"] == [RED] and good[2]["images"] == []
    reasons = [b.reason for b in bad]
    assert len(bad) == 7
    for expected in ("malformed JSON", "missing field: prompt", "missing image", "not a readable image",
                     "image mismatch"):
        assert any(expected in r for r in reasons), (expected, reasons)
    # a path leaving the prompt file's folder is never read, however it is written (the one containment rule)
    assert sum("image outside root" in r for r in reasons) == 2, reasons


def test_parquet_in_verl_layout_and_quarantine_file(tmp_path):
    table = pa.Table.from_pylist([
        {"prompt": [{"role": "user", "content": "<image>Colour?"}], "images": [{"bytes": RED, "path": "a.png"}],
         "reward_model": {"ground_truth": "red", "style": "rule"}},
        {"prompt": [{"role": "user", "content": "<image>Colour?"}], "images": [{"bytes": b"junk", "path": "b.png"}],
         "reward_model": {"ground_truth": "red", "style": "rule"}},
    ] * 3)
    pq.write_table(table, tmp_path / "train.parquet")
    cfg = load_grpo_config(None, [f"prompts.path={tmp_path / 'train.parquet'}", "prompts.held_out=1",
                                  f"output_dir={tmp_path}"])
    folder = RunFolder(cfg.location)
    train, held = load_prompts(cfg, folder)
    assert len(train) + len(held) == 3 and len(held) == 1
    quarantined = [json.loads(line) for line in (folder.local / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantined) == 3 and all("not a readable image" in q["reason"] for q in quarantined)
    with pytest.raises(ValueError, match="none to train on"):
        load_prompts(load_grpo_config(None, [f"prompts.path={tmp_path / 'train.parquet'}", "prompts.held_out=3",
                                             f"output_dir={tmp_path}"]), folder)
