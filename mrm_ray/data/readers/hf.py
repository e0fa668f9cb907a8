"""Hugging Face preference datasets on disk: a `save_to_disk` folder, or Parquet files.

Two published layouts (Parquet, or JSONL where a set publishes its annotations that way):
- RLAIF-V (openbmb/RLAIF-V-Dataset), also MMPR's layout: `image` (`{bytes, path}`; a null `bytes` means the
  file at `path` under the image root), `question`, `chosen`, `rejected` strings.
- UltraFeedback binarized (HuggingFaceH4/ultrafeedback_binarized): `prompt`, `chosen` /
  `rejected` as whole conversations (the response is the last assistant message),
  `score_chosen` / `score_rejected`, and `prompt_id` as the id.

The container (a `save_to_disk` folder, Parquet or JSONL files) is read by
`base.iter_dataset_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, iter_dataset_rows
from mrm_ray.data.readers.ultrafeedback import score
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import image_bytes


def _read(path: str | Path, *, source: str | None, split: str,
          build: Callable[[dict, str, str], dict]) -> Iterator[dict | Rejected]:
    name = source or Path(path).stem
    yield from build_each(iter_dataset_rows(path, split, name), source=name, id_keys=("id", "prompt_id"),
                          build=lambda row, pos: build(row, name, pos))


def read_hf_rlaif_v(path: str | Path, *, source: str | None = None, split: str = "train",
                    image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    root = Path(image_root) if image_root else (Path(path) if Path(path).is_dir() else Path(path).parent)

    def build(row: dict, name: str, position: str) -> dict:
        if row.get("image") is None:
            raise BadRecord("missing image: the row has no image")
        record_id = position if row.get("id") is None else row["id"]
        return canonical_pair(id=record_id, source=name, position=position, prompt=row.get("question"),
                              images=[image_bytes(row["image"], root=root)],
                              chosen=row.get("chosen"), rejected=row.get("rejected"))

    return _read(path, source=source, split=split, build=build)


def _last_reply(conversation: Any, field: str) -> Any:
    if conversation is None:
        raise BadRecord(f"missing field: {field}")
    if not isinstance(conversation, list):
        raise BadRecord(f"bad field: {field} is not a message list")
    replies = [m for m in conversation if m.get("role") == "assistant"]
    if not replies:
        raise BadRecord(f"bad field: {field} has no assistant message")
    return replies[-1]["content"]


def read_hf_ultrafeedback_binarized(path: str | Path, *, source: str | None = None, split: str = "train_prefs",
                                    margin_from_scores: bool = False) -> Iterator[dict | Rejected]:
    def build(row: dict, name: str, position: str) -> dict:
        margin = (score(row.get("score_chosen"), "score_chosen") - score(row.get("score_rejected"), "score_rejected")
                  if margin_from_scores else None)
        record_id = position if row.get("prompt_id") is None else row["prompt_id"]
        return canonical_pair(id=record_id, source=name, position=position, prompt=row.get("prompt"),
                              chosen=_last_reply(row.get("chosen"), "chosen"),
                              rejected=_last_reply(row.get("rejected"), "rejected"), margin=margin)

    return _read(path, source=source, split=split, build=build)
