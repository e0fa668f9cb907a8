"""Collate functions for `iter_torch_batches`: Ray's columnar batches -> packed pair batches."""

from __future__ import annotations

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from mrm_ray.model.packing import collate_packed, collate_two_sequence

_PAIR_COLUMNS = ("prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids", "pixel_values",
                 "image_grid_thw", "margin")


def rows_from_columns(batch: dict[str, np.ndarray]) -> list[dict]:
    """{column: array of N values} -> N row dicts with the pair feature keys."""
    n = len(batch["prompt_ids"])
    rows = []
    for i in range(n):
        row = {k: batch[k][i] for k in _PAIR_COLUMNS if k in batch}
        if "margin" in row and np.isnan(row["margin"]):
            row["margin"] = None
        rows.append(row)
    return rows


class PairCollate(NumpyBatchCollateFn):
    """Picklable collate_fn building packed (default) or two-sequence batches on the worker (from the
    dict of NumPy columns Ray Data batches as).

    With `sources`, the batch also carries `source_index` (B,) for per-source metrics.
    """

    def __init__(self, *, pad_token_id: int, packed: bool = True, padding_side: str = "right",
                 sources: list[str] | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.packed = packed
        self.padding_side = padding_side
        self.sources = list(sources or [])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        collate = collate_packed if self.packed else collate_two_sequence
        out = collate(rows_from_columns(batch), pad_token_id=self.pad_token_id, padding_side=self.padding_side)
        if self.sources:
            out["source_index"] = torch.tensor([self.sources.index(str(s)) for s in batch["source"]])
        return out


def steps_per_epoch(n_rows: int, *, world_size: int, batch_size: int) -> int:
    """Optimizer steps every worker takes in one pass: the same on every rank.

    Ray's `streaming_split(equal=True)` gives each worker the same number of rows, and
    `drop_last` the same number of batches; stopping every worker after exactly this many
    batches also guards against any rank running one batch more than the others, which
    would leave the rest waiting in a collective forever.
    """
    return (n_rows // world_size) // batch_size


def pair_batches(shard, *, steps: int, batch_size: int, collate: PairCollate, epoch_seed: int,
                 shuffle_buffer: int = 0):
    """Exactly `steps` packed batches from a Ray Train dataset shard (`get_dataset_shard`)."""
    batches = shard.iter_torch_batches(
        batch_size=batch_size, collate_fn=collate, drop_last=True, prefetch_batches=2,
        local_shuffle_buffer_size=shuffle_buffer or None, local_shuffle_seed=epoch_seed if shuffle_buffer else None)
    done = 0
    for batch in batches:
        if done == steps:
            return
        yield batch
        done += 1
    if done < steps:
        raise RuntimeError(f"the data shard ran out after {done} of {steps} batches; "
                           "the dataset changed size after steps were counted")
