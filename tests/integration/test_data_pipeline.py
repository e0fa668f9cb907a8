"""Ray Data end to end: bad records quarantined exactly, good ones all kept, mixture ratios,
seeded shuffles, and encoded rows that equal in-process encoding."""

import json

import numpy as np
import pytest

from mrm_ray.config import DataConfig
from mrm_ray.config import MixtureConfig, SourceConfig
from mrm_ray.data.pipeline import prepare_mixture
from mrm_ray.data.quarantine import TooManyBadRecords, reason_kind

from helpers.corpus import BAD_KINDS, MODE_KINDS, write_corpus

CONFIG = DataConfig(image_modes="reject", max_length=512, max_prompt_tokens=256, max_response_tokens=64, min_response_tokens=8,
                    max_image_pixels=4_000_000, max_bad_fraction=0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _mixture(corpus, *, image_weight="all", text_weight="all", held_out=0.0, total=None):
    return MixtureConfig(name="test", held_out_fraction=held_out, total=total, sources=(
        SourceConfig(name="images", reader="chat_messages", path=str(corpus["image"]), weight=image_weight),
        SourceConfig(name="text", reader="chat_messages", path=str(corpus["text"]), weight=text_weight)))


@pytest.fixture(scope="module")
def prepared(ray_cluster, corpus, tiny_checkpoint, tmp_path_factory):
    """The whole corpus with the test settings (and a run directory for the quarantine file)."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, prepare_mixture(_mixture(corpus), processor_path=tiny_checkpoint, data_config=CONFIG,
                                    run_dir=run_dir)


def test_bad_records_quarantined_with_exact_counts(prepared):
    tmp_path, data = prepared
    entries = [json.loads(line) for line in data.quarantine_path.read_text().splitlines()]
    kinds = {}
    for e in entries:
        kinds[reason_kind(e["reason"])] = kinds.get(reason_kind(e["reason"]), 0) + 1
        assert e["source"] == "images" and e["position"].startswith("image_pairs.jsonl:")
    assert kinds == BAD_KINDS
    assert data.quarantine_summary == {"images": BAD_KINDS}
    assert data.counts["images"] == {"available": 40, "rejected": sum(BAD_KINDS.values()), "mixture": 40,
                                     "train": 40, "held_out": 0}
    assert data.counts["text"]["available"] == 20
    ids = {r["id"] for r in data.train.take_all()}
    assert ids == {f"good-{i}" for i in range(40)} | {f"text-{i}" for i in range(20)}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the file was renamed into place


def test_convert_policy_keeps_mode_images(ray_cluster, corpus, tiny_checkpoint):
    config = DataConfig(**{**CONFIG.__dict__, "image_modes": "convert"})  # the default
    data = prepare_mixture(_mixture(corpus), processor_path=tiny_checkpoint, data_config=config)
    assert data.counts["images"]["available"] == 40 + MODE_KINDS
    assert "unsupported image mode" not in data.quarantine_summary["images"]


def test_default_threshold_stops_with_a_clear_message(ray_cluster, corpus, tiny_checkpoint, tmp_path):
    config = DataConfig(**{**CONFIG.__dict__, "max_bad_fraction": 0.01})
    with pytest.raises(TooManyBadRecords, match=r"15 of 75 records \(20.00%\) .* quarantine"):
        prepare_mixture(_mixture(corpus), processor_path=tiny_checkpoint, data_config=config, run_dir=tmp_path)
    assert (tmp_path / "quarantine.jsonl").is_file()  # written before stopping, for the user to read


def test_mixture_ratios_and_held_out_split(ray_cluster, corpus, tiny_checkpoint):
    data = prepare_mixture(_mixture(corpus, image_weight=0.7, text_weight=0.3, held_out=0.2),
                           processor_path=tiny_checkpoint, data_config=CONFIG)
    mix = {s: c["mixture"] for s, c in data.counts.items()}
    total = sum(mix.values())
    assert abs(mix["images"] / total - 0.7) <= 0.02 and abs(mix["text"] / total - 0.3) <= 0.02
    assert mix["images"] == 40  # the largest mixture that repeats no source
    for c in data.counts.values():
        assert c["train"] + c["held_out"] == c["mixture"] and c["held_out"] > 0
    train_ids = {r["id"] for r in data.train.take_all()}
    held_ids = {r["id"] for r in data.held_out.take_all()}
    assert not train_ids & held_ids


def test_fixed_counts_repeat_and_shuffle_is_seeded(ray_cluster, corpus, tiny_checkpoint):
    a = prepare_mixture(_mixture(corpus, image_weight=10, text_weight=30), processor_path=tiny_checkpoint,
                        data_config=CONFIG)
    b = prepare_mixture(_mixture(corpus, image_weight=10, text_weight=30), processor_path=tiny_checkpoint,
                        data_config=CONFIG)
    order_a = [r["id"] for r in a.train.take_all()]
    assert order_a == [r["id"] for r in b.train.take_all()]
    assert sum(i.startswith("text-") for i in order_a) == 30  # 20 available: 10 repeat
    assert len({i for i in order_a if i.startswith("good-")}) == 10
    other = DataConfig(**{**CONFIG.__dict__, "shuffle_seed": 1})
    c = prepare_mixture(_mixture(corpus, image_weight=10, text_weight=30), processor_path=tiny_checkpoint,
                        data_config=other)
    assert [r["id"] for r in c.train.take_all()] != order_a


def test_encoded_rows_match_in_process_encoding(prepared, corpus, encoder):
    from mrm_ray.data.readers.chat_messages import read_chat_messages
    from mrm_ray.data.schema import to_chat_messages

    _, data = prepared
    rows = {r["id"]: r for r in data.encode(data.train, batch_size=8).take_all()}
    originals = {r["id"]: r for r in read_chat_messages(corpus["image"]) if isinstance(r, dict)}
    for pair_id in ("good-0", "good-7"):
        ref = originals[pair_id]
        want = encoder.encode_pair(to_chat_messages(ref["prompt"]), ref["images"], ref["chosen"], ref["rejected"])
        got = rows[pair_id]
        for key in ("prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids", "image_grid_thw"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        np.testing.assert_allclose(got["pixel_values"], want["pixel_values"], rtol=0, atol=1e-6)
    text_row = next(r for i, r in rows.items() if i.startswith("text-"))
    assert text_row["pixel_values"].shape[0] == 0 and text_row["image_grid_thw"].shape == (0, 3)


def test_ranked_records_stream_through_ray_data_as_groups(ray_cluster, corpus, tiny_checkpoint, tmp_path):
    """UltraFeedback with `ranked: true` beside plain pairs: each record stays one row (counted once), its
    further responses and scores come through checking and encoding, and it collates into one group of
    all its responses with every pair of different scores; the all-identical record is quarantined."""
    from mrm_ray.data.collate import record_group, rows_from_columns

    records = [{"instruction": f"Q{i}", "completions": [{"response": f"answer {i} {k}", "overall_score": s}
                                                          for k, s in enumerate((3.0, 9.0, 1.0, 5.0))]}
               for i in range(6)]
    records.append({"instruction": "Q same", "completions": [{"response": "x", "overall_score": s}
                                                              for s in (1.0, 2.0)]})
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    mixture = MixtureConfig(name="ranked", held_out_fraction=0.0, sources=(
        SourceConfig(name="uf", reader="ultrafeedback_ultra_hard", path=str(path), options={"ranked": True}),
        SourceConfig(name="text", reader="chat_messages", path=str(corpus["text"]))))
    data = prepare_mixture(mixture, processor_path=tiny_checkpoint, data_config=CONFIG, run_dir=tmp_path)
    assert data.counts["uf"]["available"] == 6 and data.quarantine_summary["uf"] == {"all 2 responses identical": 1}
    batch = data.encode(data.train, batch_size=8).take_batch(26, batch_format="numpy")
    groups = {str(i): record_group(r) for i, r in zip(batch["id"], rows_from_columns(batch))}
    ranked = [g for i, g in groups.items() if not i.startswith("text-")]
    assert len(ranked) == 6 and all(len(g["responses"]) == 4 and len(g["pairs"]) == 6 for g in ranked)
    assert all(len(g["pairs"]) == 1 for i, g in groups.items() if i.startswith("text-"))


def test_many_read_tasks_give_the_same_quarantine_counts_and_splits(ray_cluster, corpus, tiny_checkpoint, tmp_path):
    """A source cut into many parts (read in parallel) gives exactly what one read task gives: the same
    quarantine file, counts, train and held-out rows; only an index of small columns is held."""
    runs = {}
    for name, rows in (("one", 10_000), ("many", 3)):
        config = DataConfig(**{**CONFIG.__dict__, "rows_per_part": rows})
        runs[name] = prepare_mixture(_mixture(corpus, image_weight=30, text_weight=30, held_out=0.2),
                                     processor_path=tiny_checkpoint, data_config=config, run_dir=tmp_path / name)
    one, many = runs["one"], runs["many"]
    assert (one.parts, many.parts) == (2, 19 + 7)  # 55 image lines + 20 text lines, 3 a part
    assert many.quarantine_path.read_text() == one.quarantine_path.read_text()
    assert many.counts == one.counts
    for split in ("train", "held_out"):
        assert sorted(r["id"] for r in getattr(many, split).take_all()) == sorted(
            r["id"] for r in getattr(one, split).take_all())
    assert many.n_train == len(many.train.take_all()) and many.n_held_out == len(many.held_out.take_all())
    assert "images" not in many.mixed.column_names and many.mixed.num_rows == many.n_train + many.n_held_out


def test_heavy_blocks_stay_under_the_target_size(ray_cluster, corpus, tiny_checkpoint, monkeypatch):
    """Ray Data merges a task's outputs into blocks of up to its target size (128 MiB unless set): a part of
    images, or a batch of encoded pixels, would then be one block far past a small object store. The
    pipeline sets the target; with a small one, every encoded block holds at most the target plus one row."""
    from ray.data import DataContext

    import mrm_ray.data.pipeline as pipeline

    context = DataContext.get_current()
    before = context.target_max_block_size
    monkeypatch.setattr(pipeline, "BLOCK_TARGET", 1 << 20)
    try:
        images = MixtureConfig(name="images", sources=(
            SourceConfig(name="images", reader="chat_messages", path=str(corpus["image"])),))
        data = prepare_mixture(images, processor_path=tiny_checkpoint, data_config=CONFIG)
        assert context.target_max_block_size == 1 << 20
        bundles = list(data.encode(data.train, batch_size=16).iter_internal_ref_bundles())
    finally:
        context.target_max_block_size = before
    blocks = [m for b in bundles for m in b.metadata]
    rows = sum(m.num_rows for m in blocks)
    assert rows == data.n_train > 16
    row_bytes = max(m.size_bytes / m.num_rows for m in blocks)
    assert row_bytes > 100_000  # encoded pixels: a batch of 16 would be one block of over 1.6 MB
    assert all(m.size_bytes <= (1 << 20) + row_bytes for m in blocks), [(m.num_rows, m.size_bytes) for m in blocks]
