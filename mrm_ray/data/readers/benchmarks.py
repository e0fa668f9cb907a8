"""Reward-model benchmark pair files: MM-RLHF-RewardBench and VL-RewardBench (r1_reward's JSONL).

Each line has `id`, a string `prompt`, `chosen`, `rejected` and one `image` path under an
image root the caller names (the media files are published separately); MM-RLHF rows may
carry a `video` instead, which this image-only pipeline sets aside with its reason.
Several pairs share one benchmark id (MM-RLHF groups them for Acc+; VL-RewardBench repeats
a few), so the canonical id is `f"{id}#{k}"`, k counting the lines seen with that id, and
the row keeps `group_id` (the benchmark's id) and `category` for per-category scoring.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import expand_files, guarded, iter_json_lines, read_image_file
from mrm_ray.data.schema import canonical_pair

MM_RLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")
# The published VL-RewardBench sizes (general 183, hallucination 749, reasoning 318) need the
# id prefixes matched case-insensitively: `RLAIF-V-*` and `RLHF-V-*` are hallucination pairs.
VL_REWARDBENCH_PREFIXES = {"hallucination": ("hallucination_pair", "rlaif-v", "rlhf-v"),
                           "reasoning": ("mmmu", "mathverse")}


def mm_rlhf_category(media: str) -> str:
    """The keyword naming the media path's top folder, else the first one inside the path."""
    path = media.lower()
    top = path.split("/", 1)[0]
    if top in MM_RLHF_CATEGORIES:
        return top
    return next((c for c in MM_RLHF_CATEGORIES if c in path), "other")


def vl_rewardbench_category(record_id: str) -> str:
    """hallucination (POVID, RLAIF-V, RLHF-V), reasoning (MMMU-Pro, MathVerse), else general."""
    low = record_id.lower()
    return next((cat for cat, prefixes in VL_REWARDBENCH_PREFIXES.items() if low.startswith(prefixes)),
                "general")


def _pair(row: dict, k: int, *, root: Path, source: str, position: str,
          category: Callable[[dict], str]) -> dict:
    if row.get("video") is not None:
        raise BadRecord(f"unsupported media: video {row['video']} (only images are read)")
    group_id = str(row["id"])
    pair = canonical_pair(id=f"{group_id}#{k}", source=source, position=position, prompt=row.get("prompt"),
                          images=[read_image_file(root, row["image"])],
                          chosen=row.get("chosen"), rejected=row.get("rejected"))
    pair["group_id"] = group_id
    pair["category"] = category(row)
    return pair


def _read(path: str | Path, *, source: str | None, image_root: str | Path,
          category: Callable[[dict], str]) -> Iterator[dict | Rejected]:
    root, seen = Path(image_root), Counter()
    for file in expand_files(path, ("*.jsonl",)):
        name = source or file.stem
        for position, row in iter_json_lines(file, name):
            if isinstance(row, Rejected):
                yield row
                continue
            k = seen[row.get("id")]
            seen[row.get("id")] += 1
            yield guarded(lambda: _pair(row, k, root=root, source=name, position=position, category=category),
                          source=name, position=position, record_id=row.get("id"))


def read_mm_rlhf_rewardbench(path: str | Path, *, source: str | None = None,
                             image_root: str | Path) -> Iterator[dict | Rejected]:
    return _read(path, source=source, image_root=image_root,
                 category=lambda row: mm_rlhf_category(row["image"]))


def read_vl_rewardbench(path: str | Path, *, source: str | None = None,
                        image_root: str | Path) -> Iterator[dict | Rejected]:
    return _read(path, source=source, image_root=image_root,
                 category=lambda row: vl_rewardbench_category(str(row["id"])))
