"""Columnar batches (as `iter_torch_batches` hands them to a worker) -> packed pair batches, and the
step count every rank takes: the same on each, whatever the row count."""

import numpy as np
import pytest

from mrm_ray.data.collate import PairCollate, steps_per_epoch
from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.packing import SEG_CHOSEN, SEG_REJECTED


def test_steps_per_epoch_is_equal_per_rank_and_drops_the_remainder():
    assert steps_per_epoch(37, world_size=2, batch_size=4) == 4  # 18 rows a rank (one left over): 4 batches
    assert steps_per_epoch(102, world_size=2, batch_size=8) == 6  # the tiny preset at 128 pairs
    assert steps_per_epoch(7, world_size=2, batch_size=4) == 0
    assert steps_per_epoch(64, world_size=1, batch_size=8) == 8


def test_collate_builds_packed_batches_with_sources(encoder):
    rows = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
            for r in image_grounded_pairs(3, seed=4)]
    columns = {}
    for key in ("prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids", "pixel_values",
                "image_grid_thw"):
        column = np.empty(len(rows), dtype=object)
        column[:] = [r[key] for r in rows]
        columns[key] = column
    columns["margin"] = np.array([np.nan, 0.5, np.nan])
    columns["source"] = np.array(["b", "a", "b"])
    batch = PairCollate(pad_token_id=encoder.pad_token_id, sources=["a", "b"])(columns)
    assert batch["input_ids"].shape[0] == 3 and batch["source_index"].tolist() == [1, 0, 1]
    assert int((batch["segment_ids"] == SEG_CHOSEN).sum()) == int(batch["chosen_lengths"].sum())
    assert int((batch["segment_ids"] == SEG_REJECTED).sum()) == int(batch["rejected_lengths"].sum())
    assert batch["chosen_lengths"].tolist() == [len(r["chosen_ids"]) for r in rows]
    assert batch["margin"].tolist() == [0.0, 0.5, 0.0]  # NaN (no margin) reads as none


def test_a_step_is_cut_by_tokens_into_balanced_micro_batches_that_keep_every_pair(encoder):
    from mrm_ray.data.collate import micro_batch_count, pair_length, step_micro_batches

    rows = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
            for r in image_grounded_pairs(7, seed=2)]
    lengths = [pair_length(r) for r in rows]
    budget = sum(lengths) // 3 + max(lengths)
    parts = micro_batch_count(rows, budget)  # no process group here: this rank's own count
    assert parts == 3 or (parts == 2 and budget * 2 >= sum(lengths))
    cut = step_micro_batches(rows, PairCollate(pad_token_id=encoder.pad_token_id, row_tokens=budget), parts=parts)
    assert [n for _, n in cut] and sum(n for _, n in cut) == len(rows)
    real = [int((b["segment_ids"] != 0).sum()) for b, _ in cut]
    assert sum(real) == sum(lengths) and max(real) - min(real) <= max(lengths)  # balanced
    assert max(real) <= budget
    assert all(b["input_ids"].shape[0] == 1 for b, _ in cut)  # each micro-batch fits one row of the budget
    assert micro_batch_count(rows, 10) == len(rows)  # never more micro-batches than pairs


def test_balanced_parts_are_non_empty_and_in_order():
    from mrm_ray.model.packing import balanced_parts

    parts = balanced_parts([5, 1, 9, 3, 3, 7], 3)
    assert sorted(i for p in parts for i in p) == list(range(6)) and all(p == sorted(p) for p in parts)
    assert sorted(sum([5, 1, 9, 3, 3, 7][i] for i in p) for p in parts) == [9, 9, 10]
    with pytest.raises(ValueError):
        balanced_parts([1, 2], 3)


def test_a_ranked_record_trains_all_its_pairs_with_its_prompt_once(encoder, tiny_checkpoint):
    """Check and encode (the pipeline's own stages, called directly) a ranked record and a plain pair,
    then collate: the ranked record is one group of 4 responses with its 5 pairs of different scores
    (two responses tie), the pair one group with one; sources count per pair."""
    from mrm_ray.config import DataConfig, to_dict
    from mrm_ray.data.collate import record_group
    from mrm_ray.data.parts import record_row as _row, rows_table as _table
    from mrm_ray.data.pipeline import CheckPairs, EncodePairs
    from mrm_ray.data.schema import canonical_pair

    ranked = canonical_pair(id="r", source="uf", position="uf:1", prompt="Which is best?", chosen="four",
                            rejected="one", more_responses=["two", "three"], scores=[4.0, 1.0, 2.0, 2.0])
    plain = canonical_pair(id="p", source="b", position="b:1", prompt="Hi?", chosen="Hello!", rejected="Go.")
    config = to_dict(DataConfig())
    checked = CheckPairs(str(tiny_checkpoint), config)(_table([_row(ranked), _row(plain)]))
    assert checked["reject_reason"].to_pylist() == [None, None]
    assert checked["more_tokens"].to_pylist()[0] and checked["more_tokens"].to_pylist()[1] == []
    columns = EncodePairs(str(tiny_checkpoint), config)(checked)
    rows = [{k: columns[k][i] for k in columns} for i in range(2)]
    for r in rows:
        r["margin"] = None
    group = record_group(rows[0])
    assert len(group["responses"]) == 4 and sorted(group["pairs"]) == [(0, 1), (0, 2), (0, 3), (2, 1), (3, 1)]
    batch = PairCollate(pad_token_id=encoder.pad_token_id, sources=["b", "uf"])(columns)
    assert len(batch["chosen_index"]) == 6 and batch["rejected_index"].tolist()[-1] == 5  # 5 ranked, 1 plain
    assert batch["source_index"].tolist() == [1] * 5 + [0]
    assert int((batch["segment_ids"] == 1).sum()) == len(rows[0]["prompt_ids"]) + len(rows[1]["prompt_ids"])


def test_training_quarantines_a_pair_with_images_inside_responses(tiny_checkpoint):
    """MMRB2-style pairs read into a training mixture are set aside with the reason, not trained on as text
    with `<image>` marks; the pair beside them is kept."""
    from helpers.images import png
    from mrm_ray.config import DataConfig, to_dict
    from mrm_ray.data.parts import record_row as _row, rows_table as _table
    from mrm_ray.data.pipeline import CheckPairs
    from mrm_ray.data.schema import canonical_pair

    drawn = canonical_pair(id="d", source="mmrb2", position="r.json:0", prompt="Which?", chosen="Look: <image>",
                           rejected="No.", chosen_images=[png()])
    plain = canonical_pair(id="p", source="b", position="b:1", prompt="Hi?", chosen="Hello!", rejected="Go.")
    checked = CheckPairs(str(tiny_checkpoint), to_dict(DataConfig()))(_table([_row(drawn), _row(plain)]))
    reasons = checked["reject_reason"].to_pylist()
    assert reasons[0].startswith("not supported: images inside responses") and reasons[1] is None
    assert checked["chosen_images"].to_pylist()[0] == []  # the bytes are not carried on
