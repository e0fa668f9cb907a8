"""Ray Data's columnar batches -> packed pair batches, and the micro-batches of one optimizer step.

A worker reads its shard in batches of `micro_batch_size` pairs (`pair_batches`). Without a
token budget each is one micro-batch, as it came. With `train.max_tokens_per_micro_batch`
the pairs of one optimizer step are cut again by tokens (`step_micro_batches`): into as few
micro-batches as hold them, the same count on every rank (one all-reduce of an integer),
balanced by length and packed into rows of at most the budget, so padding stays small and a
long pair no longer sets the size of everyone's row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from mrm_ray.data.schema import ranked_pairs
from mrm_ray.model.packing import balanced_parts, collate_groups, collate_two_sequence, pair_group

_PAIR_COLUMNS = ("prompt_ids", "prompt_mm_token_type_ids", "chosen_ids", "rejected_ids", "pixel_values",
                 "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "margin", "more_ids",
                 "more_lengths", "scores")


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


def _is_ranked(row: dict) -> bool:
    return row.get("scores") is not None and len(row["scores"]) > 0


def record_group(row: dict) -> dict:
    """An encoded record as the group it trains: a pair's two responses and its one pair, or a ranked
    record's responses (chosen, rejected, then the rest) with every pair `ranked_pairs` names, each
    with its score difference as margin when the record has a margin."""
    if not _is_ranked(row):
        return pair_group(row)
    more, lengths, scores = row["more_ids"], row["more_lengths"], row["scores"]
    others = np.split(np.asarray(more), np.cumsum(lengths)[:-1]) if len(lengths) else []
    responses = [row["chosen_ids"], row["rejected_ids"], *others]
    pairs = ranked_pairs(responses, list(scores))
    margins = [None if row.get("margin") is None else float(scores[a] - scores[b]) for a, b in pairs]
    group = {k: v for k, v in row.items() if k not in ("chosen_ids", "rejected_ids", "margin", "more_ids",
                                                      "more_lengths", "scores")}
    return {**group, "responses": responses, "pairs": pairs, "margins": margins}


class PairCollate(NumpyBatchCollateFn):
    """Picklable collate_fn building packed (default) or two-sequence batches on the worker (from the
    dict of NumPy columns Ray Data batches as); packed rows hold up to `row_tokens` tokens of groups.

    With `sources`, the batch also carries `source_index` (pairs,) for per-source metrics.
    """

    def __init__(self, *, pad_token_id: int, packed: bool = True, padding_side: str = "right",
                 sources: list[str] | None = None, row_tokens: int | None = None, share_prompt: bool = True) -> None:
        self.pad_token_id = pad_token_id
        self.packed = packed
        self.share_prompt = share_prompt  # False: one response per row (model/families.py)
        self.padding_side = padding_side
        self.sources = list(sources or [])
        self.row_tokens = row_tokens

    def _batch(self, rows: Sequence[dict]) -> tuple[dict, list[int]]:
        """(the batch, the pairs each record contributes to it)."""
        if not self.packed:
            if any(_is_ranked(r) for r in rows):
                raise ValueError("ranked records need the packed forward (model.pair_forward=packed)")
            batch = collate_two_sequence(rows, pad_token_id=self.pad_token_id, padding_side=self.padding_side)
            return batch, [1] * len(rows)
        groups = [record_group(r) for r in rows]
        batch = collate_groups(groups, pad_token_id=self.pad_token_id, padding_side=self.padding_side,
                               row_tokens=self.row_tokens, share_prompt=self.share_prompt)
        return batch, [len(g["pairs"]) for g in groups]

    def pairs(self, rows: Sequence[dict]) -> dict:
        """Encoded records -> one batch; a ranked record trains all its pairs with its prompt once."""
        return self._batch(rows)[0]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict:
        out, per_record = self._batch(rows_from_columns(batch))
        if self.sources:  # per pair: a ranked record's pairs all count for its source
            out["source_index"] = torch.tensor([self.sources.index(str(s)) for s, n in zip(batch["source"], per_record)
                                                for _ in range(n)])
        return out


def steps_per_epoch(n_rows: int, *, world_size: int, batch_size: int) -> int:
    """Optimizer steps every worker takes in one pass: the same on every rank.

    Ray's `streaming_split(equal=True)` gives each worker the same number of rows, and
    `drop_last` the same number of batches; stopping every worker after exactly this many
    batches also guards against any rank running one batch more than the others, which
    would leave the rest waiting in a collective forever.
    """
    return (n_rows // world_size) // batch_size


def pair_length(row: dict) -> int:
    """Tokens of an encoded record: its prompt and all its responses."""
    more = row.get("more_ids")
    return len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"]) + (
        0 if more is None else len(more))


def parts_needed(lengths: Sequence[int], max_tokens: int) -> int:
    """The fewest balanced parts (`balanced_parts`) with none over the budget (a pair longer than the
    budget makes a part of its own)."""
    cap = max(max_tokens, max(lengths))
    for parts in range(max(1, math.ceil(sum(lengths) / max_tokens)), len(lengths)):
        if max(sum(lengths[i] for i in p) for p in balanced_parts(lengths, parts)) <= cap:
            return parts
    return len(lengths)


def micro_batch_count(rows: Sequence[dict], max_tokens: int) -> int:
    """Micro-batches this rank's pairs of one step need: as few as hold them under the budget, the
    largest over ranks (every rank must run as many forwards and backwards), at most one per pair."""
    import torch.distributed as dist

    needed = torch.tensor(parts_needed([pair_length(r) for r in rows], max_tokens), dtype=torch.long)
    if dist.is_initialized():
        dist.all_reduce(needed, op=dist.ReduceOp.MAX)
    return max(1, min(int(needed), len(rows)))


def step_micro_batches(rows: Sequence[dict], collate: PairCollate, *, parts: int) -> list[tuple[dict, int]]:
    """One step's records -> `parts` packed micro-batches of nearly equal tokens, each with its pair count."""
    out = []
    for part in balanced_parts([pair_length(r) for r in rows], parts):
        batch = collate.pairs([rows[i] for i in part])
        out.append((batch, len(batch["chosen_lengths"])))
    return out


def pair_batches(shard, *, steps: int, batch_size: int, collate: PairCollate | None, epoch_seed: int,
                 shuffle_buffer: int = 0):
    """Exactly `steps` batches of `batch_size` pairs from a Ray Train dataset shard (`get_dataset_shard`):
    collated by `collate`, or (without one) as encoded pair rows for `step_micro_batches`."""
    options = dict(batch_size=batch_size, drop_last=True, prefetch_batches=2,
                   local_shuffle_buffer_size=shuffle_buffer or None,
                   local_shuffle_seed=epoch_seed if shuffle_buffer else None)
    if collate is not None:
        batches = shard.iter_torch_batches(collate_fn=collate, **options)
    else:
        batches = (rows_from_columns(b) for b in shard.iter_batches(batch_format="numpy", **options))
    done = 0
    for batch in batches:
        if done == steps:
            return
        yield batch
        done += 1
    if done < steps:
        raise RuntimeError(f"the data shard ran out after {done} of {steps} batches; "
                           "the dataset changed size after steps were counted")
