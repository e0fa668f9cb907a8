"""The TRL / OpenRLHF preference format, in JSONL or Parquet (a file or a directory of them).

Explicit form: `prompt`, `chosen`, `rejected`, each a string or a list of `{role, content}`
messages, optional `margin`. Implicit-prompt form (TRL's other standard): no `prompt`, and
`chosen` / `rejected` are whole conversations sharing every message but the last, which
is the response. Optional `images`: `{bytes, path}` structs (as `datasets` writes Parquet),
raw bytes, or file names under an image root (default the file's folder). Prompt image
parts are `{"type": "image"}`; a string prompt gets its images first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, drop_nulls, expand_files, iter_table_records
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import image_bytes

def _split_implicit(chosen: Any, rejected: Any) -> tuple[list, Any, Any]:
    if not (isinstance(chosen, list) and isinstance(rejected, list) and chosen and rejected):
        raise BadRecord("missing field: prompt")
    if chosen[:-1] != rejected[:-1]:
        raise BadRecord("implicit prompt mismatch: chosen and rejected differ before the last message")
    return chosen[:-1], chosen[-1], rejected[-1]


def _pair(row: dict, *, root: Path, source: str, position: str) -> dict:
    prompt, chosen, rejected = (drop_nulls(row.get(k)) for k in ("prompt", "chosen", "rejected"))
    if prompt is None:
        prompt, chosen, rejected = _split_implicit(chosen, rejected)
    images = [image_bytes(image, root=root) for image in row.get("images") or []]
    record_id = position if row.get("id") is None else row["id"]
    return canonical_pair(id=record_id, source=source, position=position, prompt=prompt,
                          images=images, chosen=chosen, rejected=rejected, margin=row.get("margin"))


def read_trl(path: str | Path, *, source: str | None = None,
             image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.parquet", "*.jsonl")):
        root = Path(image_root) if image_root else file.parent
        name = source or file.stem
        yield from build_each(iter_table_records(file, name), source=name,
                              build=lambda row, pos: _pair(row, root=root, source=name, position=pos))
