"""Write a prepared mixture as Parquet shards for reuse, atomically, with its summary.

    OUT/train/*.parquet, OUT/held_out/*.parquet, OUT/summary.json

Canonical shards (the default) hold the checked pairs with their images as encoded bytes
and read back with the `canonical` reader; `encoded=True` writes the model-ready columns
(token ids, pixel values) instead, for jobs that want to skip preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mrm_ray.atomic import atomic_dir
from mrm_ray.config import to_dict
from mrm_ray.data.schema import PAIR_SCHEMA


def write_prepared(prepared, out_dir: str | Path, *, mixture=None, encoded: bool = False,
                   concurrency: int = 1) -> Path:
    from mrm_ray.data.pipeline import SPLIT

    with atomic_dir(out_dir) as tmp:
        if encoded:  # both splits through one encoding pass (one actor pool), written apart by their tag
            prepared.encode(prepared.both_splits(), concurrency=concurrency).write_parquet(
                str(tmp / "splits"), partition_cols=[SPLIT])
            for split in ("train", "held_out"):
                part = tmp / "splits" / f"{SPLIT}={split}"  # Hive-style partition folders
                if part.is_dir():
                    part.rename(tmp / split)
                else:  # a split with no rows
                    (tmp / split).mkdir()
            (tmp / "splits").rmdir()
        else:
            for split in ("train", "held_out"):
                getattr(prepared, split).select_columns(PAIR_SCHEMA.names).write_parquet(str(tmp / split))
        summary = {
            "format": "encoded" if encoded else "canonical",
            "counts": prepared.counts,
            "quarantine": prepared.quarantine_summary,
            "quarantine_file": str(prepared.quarantine_path) if prepared.quarantine_path else None,
            "data_config": to_dict(prepared.data_config),
            "processor": prepared.processor_path,
            "mixture": dataclasses.asdict(mixture) if mixture is not None else None,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return Path(out_dir).resolve()
