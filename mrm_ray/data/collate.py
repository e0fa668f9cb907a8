"""Collate functions for `iter_torch_batches`: Ray's columnar batches -> packed pair batches."""

from __future__ import annotations

import numpy as np

from mrm_ray.model.pairing import collate_packed, collate_two_sequence

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


class PairCollate:
    """Picklable collate_fn building packed (default) or two-sequence batches on the worker."""

    def __init__(self, *, pad_token_id: int, packed: bool = True, padding_side: str = "right") -> None:
        self.pad_token_id = pad_token_id
        self.packed = packed
        self.padding_side = padding_side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        collate = collate_packed if self.packed else collate_two_sequence
        return collate(rows_from_columns(batch), pad_token_id=self.pad_token_id, padding_side=self.padding_side)
