"""`mrm-ray data inspect` and `mrm-ray data prepare`, run in-process on the test cluster."""

import json

import pyarrow.parquet as pq
import pytest

from mrm_ray.cli import main

from helpers.corpus import BAD_KINDS, write_corpus

SETTINGS = ["image_modes=reject", "max_length=512", "max_prompt_tokens=256", "max_response_tokens=64", "min_response_tokens=8",
            "max_image_pixels=4000000"]


@pytest.fixture(scope="module")
def mixture_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_corpus(root)
    path = root / "mix.yaml"
    path.write_text("name: corpus\nheld_out_fraction: 0.25\nsources:\n"
                    "  - {name: images, reader: chat_messages, path: image_pairs.jsonl, weight: all}\n"
                    "  - {name: text, reader: chat_messages, path: '', weight: all}\n")
    return path


def test_inspect_reports_counts_lengths_and_bad_records(ray_cluster, mixture_file, tiny_checkpoint, tmp_path,
                                                        capsys):
    code = main(["data", "inspect", str(mixture_file), "--model", str(tiny_checkpoint), "--run-dir",
                 str(tmp_path), "--path", f"text={mixture_file.parent / 'text_pairs.jsonl'}", *SETTINGS,
                 "max_bad_fraction=0.01"])  # inspect reports past the limit instead of stopping
    out = capsys.readouterr().out
    assert code == 0
    images = next(line for line in out.splitlines() if line.startswith("images ") and "images" not in line[7:])
    assert images.split()[1:3] == ["40", str(sum(BAD_KINDS.values()))]
    for kind, n in BAD_KINDS.items():
        assert f"{n:>6}  {kind}" in out
    assert "packed tok" in out and "image MP" in out
    assert (tmp_path / "quarantine.jsonl").is_file()


def test_prepare_writes_reusable_canonical_shards(ray_cluster, mixture_file, tiny_checkpoint, tmp_path, capsys):
    out_dir = tmp_path / "prepared"
    code = main(["data", "prepare", str(mixture_file), "--model", str(tiny_checkpoint), "--skip-missing",
                 "--run-dir", str(tmp_path), "--out", str(out_dir), *SETTINGS, "max_bad_fraction=0.5"])
    assert code == 0 and "to " + str(out_dir) in capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["format"] == "canonical" and summary["data_config"]["max_length"] == 512
    train = pq.read_table(out_dir / "train").to_pylist()
    held = pq.read_table(out_dir / "held_out").to_pylist()
    assert len(train) + len(held) == 40 and len(held) == summary["counts"]["images"]["held_out"]
    assert all(len(r["images"]) == 1 for r in train)

    from mrm_ray.data.readers.canonical import read_canonical

    again = list(read_canonical(out_dir / "train"))
    assert [r["id"] for r in again] == [r["id"] for r in train]
    assert again[0]["images"] == train[0]["images"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepared")]


def test_prepare_encoded_shards(ray_cluster, mixture_file, tiny_checkpoint, tmp_path):
    out_dir = tmp_path / "encoded"
    assert main(["data", "prepare", str(mixture_file), "--model", str(tiny_checkpoint), "--skip-missing",
                 "--out", str(out_dir), "--encoded", "--run-dir", str(tmp_path), *SETTINGS,
                 "max_bad_fraction=0.5"]) == 0
    import ray.data

    rows = ray.data.read_parquet(str(out_dir / "train")).take(2)
    assert rows[0]["pixel_values"].shape[1] == 3 * 2 * 14 * 14
    assert rows[0]["chosen_ids"][-1] == rows[0]["rejected_ids"][-1]  # both end with <|im_end|>
    # both splits came out of one encoding pass, each in its own folder, every pair once, untagged
    counts = json.loads((out_dir / "summary.json").read_text())["counts"]["images"]
    splits = {s: ray.data.read_parquet(str(out_dir / s)) for s in ("train", "held_out")}
    assert {s: d.count() for s, d in splits.items()} == {"train": counts["train"], "held_out": counts["held_out"]}
    ids = [i for d in splits.values() for i in d.select_columns(["id"]).to_pandas()["id"]]
    assert len(ids) == len(set(ids)) == 40 and counts["held_out"] > 0
    assert "_split" not in splits["train"].columns() and sorted(p.name for p in out_dir.iterdir()) == [
        "held_out", "summary.json", "train"]


def test_prepare_stops_past_the_bad_fraction(ray_cluster, mixture_file, tiny_checkpoint, tmp_path):
    from mrm_ray.data.quarantine import TooManyBadRecords

    with pytest.raises(TooManyBadRecords, match="max_bad_fraction"):
        main(["data", "prepare", str(mixture_file), "--model", str(tiny_checkpoint), "--skip-missing",
              "--run-dir", str(tmp_path), "--out", str(tmp_path / "x"), *SETTINGS])
    assert not (tmp_path / "x").exists()
