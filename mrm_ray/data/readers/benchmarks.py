"""Reward-model benchmark pair files: MM-RLHF-RewardBench and VL-RewardBench (r1_reward's JSONL).

Each line has `id`, a string `prompt`, `chosen`, `rejected` and one `image` path under an
image root the caller names (the media files are published separately); MM-RLHF rows may
carry a `video` instead, which this image-only pipeline sets aside with its reason.
Several pairs share one benchmark id (MM-RLHF groups them for Acc+; VL-RewardBench repeats
a few), so the canonical id is `f"{id}#{k}"`, k counting the lines seen with that id, and
the row keeps `group_id` (the benchmark's id) and `category` for per-category scoring.

`stand_in_images` (a folder of real photographs) replaces each image missing under the
root with one of them, chosen by a hash of its name, and marks the row `stand_in`: the
scoring path then runs end to end, but the accuracy says nothing about the model.
Multimodal RewardBench (`all_data.json`: `ID`, `Text`, `Image`, `Output1`, `Output2`,
`Better`, `Category`) is read the same way.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import expand_files, guarded, iter_json_lines, read_image_file, resolve_under
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


def stand_in_files(folder: str | Path | None) -> list[Path]:
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"no .jpg/.png stand-in images in {folder}")
    return files


def _image(root: Path, name: str, stand_ins: list[Path]) -> tuple[bytes, bool]:
    """(bytes, is_stand_in): the file under `root`, else a stand-in picked by the name's hash."""
    if not stand_ins or resolve_under(root, name).is_file():
        return read_image_file(root, name), False
    return stand_ins[zlib.crc32(name.encode()) % len(stand_ins)].read_bytes(), True


def _pair(row: dict, k: int, *, root: Path, source: str, position: str, category: Callable[[dict], str],
          stand_ins: list[Path]) -> dict:
    if row.get("video") is not None:
        raise BadRecord(f"unsupported media: video {row['video']} (only images are read)")
    group_id = str(row["id"])
    image, stand_in = _image(root, row["image"], stand_ins)
    pair = canonical_pair(id=f"{group_id}#{k}", source=source, position=position, prompt=row.get("prompt"),
                          images=[image], chosen=row.get("chosen"), rejected=row.get("rejected"))
    pair["group_id"] = group_id
    pair["category"] = category(row)
    pair["stand_in"] = stand_in
    return pair


def _read(path: str | Path, *, source: str | None, image_root: str | Path, category: Callable[[dict], str],
          stand_in_images: str | Path | None = None) -> Iterator[dict | Rejected]:
    root, seen, stand_ins = Path(image_root), Counter(), stand_in_files(stand_in_images)
    for file in expand_files(path, ("*.jsonl",)):
        name = source or file.stem
        for position, row in iter_json_lines(file, name):
            if isinstance(row, Rejected):
                yield row
                continue
            k = seen[row.get("id")]
            seen[row.get("id")] += 1
            yield guarded(lambda: _pair(row, k, root=root, source=name, position=position, category=category,
                                        stand_ins=stand_ins),
                          source=name, position=position, record_id=row.get("id"))


def read_mm_rlhf_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                             stand_in_images: str | Path | None = None) -> Iterator[dict | Rejected]:
    return _read(path, source=source, image_root=image_root, stand_in_images=stand_in_images,
                 category=lambda row: mm_rlhf_category(row.get("image") or row.get("video") or ""))


def read_vl_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                        stand_in_images: str | Path | None = None) -> Iterator[dict | Rejected]:
    return _read(path, source=source, image_root=image_root, stand_in_images=stand_in_images,
                 category=lambda row: vl_rewardbench_category(str(row["id"])))


def multimodal_rewardbench_category(row: dict) -> str:
    """The benchmark's categories, with safety and reasoning split by id as its own scorer does."""
    category, record_id = str(row.get("Category", "")), str(row.get("ID", "")).lower()
    if category == "safety":
        return "safety/bias" if record_id.startswith("pairs") else "safety/toxicity"
    if category == "reasoning":
        return "reasoning/math" if record_id.startswith("math") else "reasoning/coding"
    return category.rsplit("/", 1)[-1].removesuffix("_task")  # open_generation/correctness_task -> correctness


def read_multimodal_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                                stand_in_images: str | Path | None = None) -> Iterator[dict | Rejected]:
    """Multimodal RewardBench's `all_data.json` (a JSON list); `Better` names the chosen output."""
    root, stand_ins = Path(image_root), stand_in_files(stand_in_images)
    for file in expand_files(path, ("*.json",)):
        name = source or file.stem
        try:
            rows = json.loads(Path(file).read_text())
        except json.JSONDecodeError as exc:
            yield Rejected(name, f"{file.name}", f"malformed JSON: {exc.msg} at line {exc.lineno}", None)
            continue
        for i, row in enumerate(rows):
            position = f"{file.name}:{i}"

            def build(row=row, position=position) -> dict:
                better = row["Better"]
                if better not in ("Output1", "Output2"):
                    raise BadRecord(f"bad field: Better {better!r} (Output1 or Output2)")
                worse = "Output2" if better == "Output1" else "Output1"
                image, stand_in = _image(root, row["Image"], stand_ins)
                pair = canonical_pair(id=str(row["ID"]), source=name, position=position, prompt=row["Text"],
                                      images=[image], chosen=row[better], rejected=row[worse])
                pair.update(group_id=str(row["ID"]), category=multimodal_rewardbench_category(row),
                            stand_in=stand_in)
                return pair

            yield guarded(build, source=name, position=position, record_id=row.get("ID") if isinstance(row, dict) else None)
