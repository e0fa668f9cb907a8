"""One reader per published preference format, each yielding canonical pair dicts; `detect_reader` names the
reader a file's own records call for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mrm_ray.data.readers.benchmarks import (read_mm_rlhf_rewardbench, read_mmrb2, read_multimodal_rewardbench,
                                             read_vl_rewardbench)
from mrm_ray.data.readers.canonical import read_canonical
from mrm_ray.data.readers.chat_messages import read_chat_messages
from mrm_ray.data.readers.hf import read_hf_rlaif_v, read_hf_ultrafeedback_binarized
from mrm_ray.data.readers.sharegpt import read_sharegpt
from mrm_ray.data.readers.trl import read_trl
from mrm_ray.data.readers.ultrafeedback import read_ultrafeedback_ultra_hard

READERS: dict[str, Callable] = {
    "chat_messages": read_chat_messages,
    "sharegpt": read_sharegpt,
    "trl": read_trl,
    "mm_rlhf_rewardbench": read_mm_rlhf_rewardbench,
    "vl_rewardbench": read_vl_rewardbench,
    "multimodal_rewardbench": read_multimodal_rewardbench,
    "mmrb2": read_mmrb2,
    "hf_rlaif_v": read_hf_rlaif_v,
    "hf_ultrafeedback_binarized": read_hf_ultrafeedback_binarized,
    "ultrafeedback_ultra_hard": read_ultrafeedback_ultra_hard,
    "canonical": read_canonical,
}


def get_reader(name: str) -> Callable:
    """The reader for a mixture source's `format` name; a typo lists the known names."""
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown reader {name!r}; known readers: {', '.join(sorted(READERS))}") from None


# (reader, the keys its records have): the first whose keys a record has all of names its format
_SIGNATURES = (
    ("canonical", {"id", "source", "position", "prompt", "images", "chosen", "rejected"}),
    ("sharegpt", {"conversations", "chosen", "rejected"}),
    ("vl_rewardbench", {"query", "response", "human_ranking"}),
    ("multimodal_rewardbench", {"Output1", "Output2", "Better"}),
    ("mmrb2", {"chosen", "human_annotations"}),
    ("ultrafeedback_ultra_hard", {"instruction", "completions"}),
    ("hf_ultrafeedback_binarized", {"prompt_id", "chosen", "rejected", "score_chosen"}),
    ("hf_rlaif_v", {"question", "image", "chosen", "rejected"}),
)


def _first_record(path: Path) -> dict:
    """The first record's keys-and-values of a JSONL / JSON / Parquet file or of a folder's first such file (a
    Parquet file's: its columns, with no values read)."""
    if path.is_dir():
        files = sorted(p for pattern in ("*.jsonl", "*.json", "*.parquet") for p in path.rglob(pattern))
        if not files:
            raise ValueError(f"no .jsonl, .json or .parquet file under {path}")
        path = files[0]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return dict.fromkeys(pq.read_schema(path).names)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))
        first = data[0] if isinstance(data, list) and data else data
        return first if isinstance(first, dict) else {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    continue
                return first if isinstance(first, dict) else {}
    return {}


def detect_reader(path: str | Path) -> str:
    """The reader of the format a file's (or folder's) records are in, from its first record's keys: a
    published form named by its own fields, a prompt of chat messages (`chat_messages`, images as files named
    in `image_url` parts), else TRL's prompt / chosen / rejected (`trl`, images as a list). ValueError, naming
    the readers, for anything else."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    record = _first_record(path)
    keys = set(record)
    for reader, needs in _SIGNATURES:
        if needs <= keys:
            return reader
    if {"chosen", "rejected"} <= keys:
        if "image" in keys or "video" in keys:
            return "mm_rlhf_rewardbench"
        prompt = record.get("prompt")
        return "chat_messages" if isinstance(prompt, list) and "images" not in keys else "trl"
    raise ValueError(f"cannot tell the format of {path} from its first record (keys {sorted(keys)}); give the "
                     f"reader: one of {', '.join(sorted(READERS))}")
