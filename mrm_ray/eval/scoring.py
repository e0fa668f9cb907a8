"""Batch scoring of preference pairs on Ray Data: one reward model per actor, batched.

`map_batches` with an actor class loads a member once per actor (GPU where asked) and
scores batches with the packed pair forward; every member scores the same dataset and
the results join back by pair id. A pair a member cannot encode gets NaN and its error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from mrm_ray.data.schema import MESSAGE

SCORE_INPUT = pa.schema([("id", pa.string()), ("prompt", pa.list_(MESSAGE)), ("images", pa.list_(pa.binary())),
                         ("chosen", pa.string()), ("rejected", pa.string()),
                         ("chosen_images", pa.list_(pa.binary())), ("rejected_images", pa.list_(pa.binary()))])


class PairScoring:
    """A `map_batches` actor holding one reward checkpoint."""

    def __init__(self, path: str, max_batch_tokens: int = 16384) -> None:
        from mrm_ray.model.scorer import Scorer

        self.scorer = Scorer(path, max_batch_tokens=max_batch_tokens)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mrm_ray.data.schema import to_chat_messages

        rows = batch.to_pylist()
        out = self.scorer.score_pairs([{"prompt": to_chat_messages(r["prompt"]), "images": r["images"],
                                        "chosen": r["chosen"], "rejected": r["rejected"],
                                        "chosen_images": r["chosen_images"], "rejected_images": r["rejected_images"]}
                                       for r in rows])
        ok = [not isinstance(v, str) for v in out]
        return pa.table({"id": [r["id"] for r in rows],
                         "chosen_score": [v[0] if good else float("nan") for v, good in zip(out, ok)],
                         "rejected_score": [v[1] if good else float("nan") for v, good in zip(out, ok)],
                         "error": [None if good else v for v, good in zip(out, ok)]})


def score_pairs_on_ray(rows: Sequence[Mapping], members: Mapping[str, str], *, batch_size: int = 16,
                       concurrency: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0
                       ) -> dict[str, dict[str, np.ndarray | list]]:
    """Per member: `chosen`, `rejected` (pairs,) aligned with `rows`, and `errors` (message or None)."""
    import ray

    table = pa.Table.from_pylist([{k: r.get(k, []) if k.endswith("_images") else r[k] for k in SCORE_INPUT.names}
                                  for r in rows], schema=SCORE_INPUT)
    # blocks of a few batches each, so every actor of the pool gets work (one big block feeds one actor)
    step = batch_size * 4
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, max(len(table), 1), step)])
    position = {r["id"]: i for i, r in enumerate(rows)}
    if len(position) != len(rows):
        raise ValueError("pair ids must be unique across the scored rows")
    def run(path: str) -> pa.Table:
        scored = ds.map_batches(PairScoring, fn_constructor_kwargs={"path": str(path)}, batch_size=batch_size,
                                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                                num_gpus=num_gpus, num_cpus=num_cpus).to_arrow_refs()
        return pa.concat_tables(ray.get(scored))

    # every member's pool at once: on a cluster each gets its own GPUs; here their start-ups overlap
    with ThreadPoolExecutor(max(1, len(members))) as pool:
        tables = dict(zip(members, pool.map(run, members.values())))
    out = {}
    for name, result in tables.items():
        chosen, rejected = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        errors: list[str | None] = [None] * len(rows)
        for pid, c, r, e in zip(*(result.column(k).to_pylist() for k in ("id", "chosen_score", "rejected_score",
                                                                           "error"))):
            i = position[pid]
            chosen[i], rejected[i], errors[i] = c, r, e
        out[name] = {"chosen": chosen, "rejected": rejected, "errors": errors}
    return out
