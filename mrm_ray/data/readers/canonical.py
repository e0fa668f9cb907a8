"""Canonical pair shards written by `mrm-ray data prepare` (Parquet, the canonical schema).

Rows are validated again on the way in, so a hand-edited shard cannot smuggle in a pair
the pipeline would have quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_parquet_rows
from mrm_ray.data.schema import canonical_pair


def read_canonical(path: str | Path, *, source: str | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.parquet",)):
        yield from build_each(iter_parquet_rows(file, source or "canonical"), source=source or "canonical",
                              build=lambda row, pos: canonical_pair(
                                  id=row["id"], source=source or row.get("source") or "canonical",
                                  position=row.get("position") or pos, prompt=row["prompt"],
                                  images=row.get("images") or [], chosen=row["chosen"], rejected=row["rejected"],
                                  margin=row.get("margin"), more_responses=row.get("more_responses") or (),
                                  scores=row.get("scores"), videos=row.get("videos") or ()))
