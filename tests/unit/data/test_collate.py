"""Columnar batches (as `iter_torch_batches` hands them to a worker) -> packed pair batches, and the
step count every rank takes: the same on each, whatever the row count."""

import numpy as np

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
