"""Raw multi-completion UltraFeedback (openbmb/UltraFeedback): one pair, or one ranked record, per prompt.

Each row has `instruction` and `completions` (each `{response, overall_score, ...}`);
an `id` where present, else the position is the id (the row's own `source` names the origin
dataset and is not the mixture source). The "ultra hard" reduction (the default) keeps the
widest gap: chosen = the highest `overall_score`, rejected = the lowest, ties going to the
first completion, so the pair is the strongest preference signal the row holds. With
`ranked: true` the record keeps every completion and its score (chosen and rejected as
above, the rest in order): training then learns from all its pairs of different scores,
with the prompt encoded once. JSONL or Parquet.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from numbers import Real
from pathlib import Path
from typing import Any

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_table_records
from mrm_ray.data.schema import canonical_pair


def score(value: Any, field: str) -> float:
    """A finite numeric score, else `BadRecord` naming the field."""
    if value is None:
        raise BadRecord(f"missing field: {field}")
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise BadRecord(f"bad field: {field} {value!r} is not a number")
    return float(value)


def _pair(row: dict, *, source: str, position: str, margin_from_scores: bool, ranked: bool = False) -> dict:
    completions = row["completions"]
    n = len(completions) if isinstance(completions, list) else 0
    if n < 2:
        raise BadRecord(f"no preference: {n} completion(s), need 2")
    scores = [score(c.get("overall_score"), f"completions[{i}].overall_score") for i, c in enumerate(completions)]
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    if scores[best] == scores[worst]:
        raise BadRecord(f"no preference: all {len(scores)} completions score {scores[best]:g}")
    record_id = position if row.get("id") is None else row["id"]
    rest = [i for i in range(n) if i not in (best, worst)] if ranked else []
    return canonical_pair(id=record_id, source=source, position=position, prompt=row.get("instruction"),
                          chosen=completions[best].get("response"), rejected=completions[worst].get("response"),
                          margin=scores[best] - scores[worst] if margin_from_scores else None,
                          more_responses=[completions[i].get("response") for i in rest],
                          scores=[scores[i] for i in (best, worst, *rest)] if ranked else None)


def read_ultrafeedback_ultra_hard(path: str | Path, *, source: str | None = None,
                                  margin_from_scores: bool = False, ranked: bool = False) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.parquet", "*.jsonl")):
        name = source or file.stem
        yield from build_each(iter_table_records(file, name), source=name, build=lambda row, pos: _pair(
            row, source=name, position=pos, margin_from_scores=margin_from_scores, ranked=ranked))
