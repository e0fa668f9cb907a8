"""Batch scoring of preference pairs on Ray Data: one reward model per actor, batched.

`map_batches` with an actor class loads a member once per actor (GPU where asked) and
scores batches with the packed pair forward; every member scores the same dataset and
the results join back by pair id. A pair a member cannot encode gets NaN and its error; a
pair with images given to a text-only member is not its to score (NaN, `applicable` False,
no error), so the vision-language members still score it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from mrm_ray.config import MAX_BATCH_TOKENS
from mrm_ray.data.schema import MESSAGE

SCORE_INPUT = pa.schema([("id", pa.string()), ("prompt", pa.list_(MESSAGE)), ("images", pa.list_(pa.binary())),
                         ("chosen", pa.string()), ("rejected", pa.string()),
                         ("chosen_images", pa.list_(pa.binary())), ("rejected_images", pa.list_(pa.binary())),
                         ("videos", pa.list_(pa.list_(pa.binary())))])


def has_images(pair: Mapping) -> bool:
    """Whether a pair shows any image (or video), in its prompt or in a response."""
    return bool(pair.get("images") or pair.get("chosen_images") or pair.get("rejected_images") or pair.get("videos"))


class PairScoring:
    """A `map_batches` actor holding one member: a reward checkpoint, or a judge (`kind: judge`,
    model/judge.py). A pairwise judge reads each pair in both orders and says whether they agree
    (`consistent`); for the others, whose reading of a response does not depend on the other's, it is null."""

    def __init__(self, spec: Mapping, name: str = "member", max_batch_tokens: int = MAX_BATCH_TOKENS) -> None:
        from mrm_ray.config import MemberSettings, validate
        from mrm_ray.model.judge import member_scorer

        settings = validate(MemberSettings, {**spec, "max_batch_tokens": max_batch_tokens}, where=f"member {name}")
        self.scorer = member_scorer(settings, name=name)
        self.orders = settings.kind == "judge" and settings.judge.mode == "pairwise"

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mrm_ray.data.schema import to_chat_messages

        rows = batch.to_pylist()
        applicable = [self.scorer.takes_images or not has_images(r) for r in rows]
        mine = [{"prompt": to_chat_messages(r["prompt"]), "images": r["images"], "chosen": r["chosen"],
                 "rejected": r["rejected"], "chosen_images": r["chosen_images"],
                 "rejected_images": r["rejected_images"], "videos": r["videos"]} for r, a in zip(rows, applicable) if a]
        if self.orders:
            scored = iter(v if isinstance(v, str) else (v[0] / 2, -v[0] / 2, v[1])
                          for v in self.scorer.compare_orders(mine))
        else:
            scored = iter(v if isinstance(v, str) else (*v, None) for v in self.scorer.score_pairs(mine))
        out = [next(scored) if a else (float("nan"), float("nan"), None) for a in applicable]
        # a response a judge gave no score (its reason in place of the value) makes the pair unscorable too
        out = [v if isinstance(v, str) else next((x for x in v[:2] if isinstance(x, str)), v) for v in out]
        ok = [not isinstance(v, str) for v in out]
        return pa.table({"id": [r["id"] for r in rows],
                         "chosen_score": [v[0] if good else float("nan") for v, good in zip(out, ok)],
                         "rejected_score": [v[1] if good else float("nan") for v, good in zip(out, ok)],
                         "consistent": pa.array([v[2] if good else None for v, good in zip(out, ok)], pa.bool_()),
                         "error": [None if good else v for v, good in zip(out, ok)],
                         "applicable": applicable, "takes_images": [self.scorer.takes_images] * len(rows),
                         # how this member's model saw each pair's videos (one route per member for the run)
                         "route": pa.array([self.scorer.encoder.video_route if r["videos"] and a else None
                                            for r, a in zip(rows, applicable)], pa.string())})


def score_pairs_on_ray(rows: Sequence[Mapping], members: Mapping[str, Mapping], *, batch_size: int = 16,
                       concurrency: int = 1, num_gpus: float = 0.0, num_cpus: float = 1.0,
                       max_batch_tokens: int = MAX_BATCH_TOKENS) -> dict[str, dict[str, np.ndarray | list]]:
    """Per member (name -> its `MemberSettings` as a mapping: `path`, and `kind` / `judge` for a judge):
    `chosen`, `rejected` (pairs,) aligned with `rows`, `errors` (message or None), `consistent` (a pairwise
    judge's two orders agree; None for the others), `applicable` (bool (pairs,): False where a text-only member
    was given a pair with images), `routes` (how its model saw a pair's videos: video or frames; None without)
    and `takes_images` (whether the member's backbone sees images)."""
    import ray

    table = pa.Table.from_pylist([{k: r.get(k, []) if k.endswith("_images") or k == "videos" else r[k]
                                   for k in SCORE_INPUT.names}
                                  for r in rows], schema=SCORE_INPUT)
    # blocks of a few batches each, so every actor of the pool gets work (one big block feeds one actor)
    step = batch_size * 4
    ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, max(len(table), 1), step)])
    position = {r["id"]: i for i, r in enumerate(rows)}
    if len(position) != len(rows):
        raise ValueError("pair ids must be unique across the scored rows")
    def run(name: str) -> pa.Table:
        scored = ds.map_batches(PairScoring, batch_size=batch_size,
                                fn_constructor_kwargs={"spec": dict(members[name]), "name": name,
                                                       "max_batch_tokens": max_batch_tokens},
                                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                                num_gpus=num_gpus, num_cpus=num_cpus).to_arrow_refs()
        return pa.concat_tables(ray.get(scored))

    # every member's pool at once: on a cluster each gets its own GPUs; here their start-ups overlap
    with ThreadPoolExecutor(max(1, len(members))) as pool:
        tables = dict(zip(members, pool.map(run, members)))
    out = {}
    for name, result in tables.items():
        chosen, rejected = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        applicable = np.zeros(len(rows), dtype=bool)
        errors: list[str | None] = [None] * len(rows)
        consistent: list[bool | None] = [None] * len(rows)
        routes: list[str | None] = [None] * len(rows)
        for pid, c, r, e, a, o, v in zip(*(result.column(k).to_pylist() for k in (
                "id", "chosen_score", "rejected_score", "error", "applicable", "consistent", "route"))):
            i = position[pid]
            chosen[i], rejected[i], errors[i], applicable[i], consistent[i], routes[i] = c, r, e, a, o, v
        takes_images = result.column("takes_images").to_pylist()[:1] or [True]
        out[name] = {"chosen": chosen, "rejected": rejected, "errors": errors, "applicable": applicable,
                     "consistent": consistent, "routes": routes,
                     "takes_images": bool(takes_images[0])}
    return out
