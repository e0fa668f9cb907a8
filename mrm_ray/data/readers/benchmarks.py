"""Reward-model benchmarks in the forms their publishers distribute them, whatever the container.

Each reader takes a Hugging Face `save_to_disk` folder, Parquet files (images as
`{bytes, path}`), or JSON / JSONL files with image paths under an image root (the file's
folder by default; also tried under its `images/` folder, as the hub repositories lay
them out). Rows keep `group_id` (the benchmark's own id) and `category` for per-category
scoring; a benchmark id repeated for several pairs becomes `f"{id}#{k}"`, k counting the
rows seen with that id.

- VL-RewardBench (MMInstruction/VL-RewardBench): `id`, `query`, a two-element `response`
  list, `human_ranking` (a rank per response, 0 = preferred) and `image` (Parquet / the
  hub dataset) or `image_path` (the JSONL release); also the flattened pair file
  (`prompt`, `chosen`, `rejected`, `image`). Categories by the official rule (`cal.py`): the
  id's first word before `_` or `-`, RLAIF / RLHF / hallucination (POVID) = hallucination,
  mathverse / mmmu = reasoning, the rest general (183 / 749 / 318).
- MM-RLHF-RewardBench (yifanzhang114/MM-RLHF-RewardBench, `mm_reward_bench.jsonl` or its
  Parquet): `id`, `image` or `video`, `prompt`, `chosen`, `rejected`. A video (a folder of frames) is read
  as its frames in order, sampled evenly to at most 16, a video before the question (the evaluation's
  members choose its route, model/inputs.py, and the scores record it); a video file is not decoded (not
  supported, saying how to make its frames).
- Multimodal RewardBench (`all_data.json`: `ID`, `Text`, `Image`, `Output1`, `Output2`,
  `Better`, `Category`).
- Multimodal RewardBench 2 (facebookresearch/MMRB2): see `read_mmrb2`.

`stand_in_images` (a folder of real photographs) replaces each image missing under the
root with one of them, chosen by a hash of its name, and marks the row `stand_in`: the
scoring path then runs end to end, but the accuracy says nothing about the model.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mrm_ray.data.quarantine import BadRecord, NotSupported, Rejected
from mrm_ray.data.readers.base import guarded, iter_dataset_rows, read_video
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import IMAGE_MARKER, file_under, image_reference

MM_RLHF_CATEGORIES = ("mcq", "long", "short", "safety", "video")
# VL-RewardBench's official categorisation: the id's first word, matched case-insensitively
VL_REWARDBENCH_WORDS = {"hallucination": ("rlaif", "rlhf", "hallucination"), "reasoning": ("mathverse", "mmmu")}
MMRB2_TASKS = ("t2i", "edit", "interleaved", "reasoning")
STAND_IN_FRAMES = 4  # frames of a stand-in video: one stand-in photograph, repeated (smoke runs only)


def mm_rlhf_category(media: str) -> str:
    """The keyword naming the media path's top folder, else the first one inside the path."""
    path = media.lower()
    top = path.split("/", 1)[0]
    if top in MM_RLHF_CATEGORIES:
        return top
    return next((c for c in MM_RLHF_CATEGORIES if c in path), "other")


def vl_rewardbench_category(record_id: str) -> str:
    """hallucination (POVID, RLAIF-V, RLHF-V), reasoning (MMMU-Pro, MathVerse), else general."""
    word = re.split(r"[_-]", str(record_id), maxsplit=1)[0].lower()
    return next((cat for cat, words in VL_REWARDBENCH_WORDS.items() if word in words), "general")


def stand_in_files(folder: str | Path | None) -> list[Path]:
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ValueError(f"no .jpg/.png stand-in images in {folder}")
    return files


class Media:
    """Images of benchmark rows: bytes in the row, else a file under the root (or its `images/`), else a
    stand-in photograph where the caller gave some."""

    def __init__(self, root: str | Path, stand_in_images: str | Path | None = None) -> None:
        self.root, self.stand_ins = Path(root), stand_in_files(stand_in_images)
        self.used_stand_in = False

    def __call__(self, image: Any) -> bytes:
        image = image_reference(image)
        if isinstance(image, bytes):
            return image
        if not isinstance(image, str) or not image:
            raise BadRecord("missing image: no bytes or file name")
        for candidate in (file_under(self.root, image), file_under(self.root / "images", image)):
            if candidate.is_file():
                return candidate.read_bytes()
        if not self.stand_ins:
            raise BadRecord(f"missing image: {image}")
        self.used_stand_in = True
        return self.stand_ins[zlib.crc32(image.encode()) % len(self.stand_ins)].read_bytes()

    def video(self, folder: Any) -> list[bytes]:
        """A video's frames: the images of a folder under the root (or its `images/`), in name order, sampled
        evenly down to `MAX_VIDEO_FRAMES`; else a stand-in photograph as `STAND_IN_FRAMES` frames where the
        caller gave stand-ins. A video file is not decoded (NotSupported, saying how to make frames)."""
        if not isinstance(folder, str) or not folder:
            raise BadRecord("missing video: no folder name")
        for root in (self.root, self.root / "images"):
            if file_under(root, folder).exists():
                return read_video(folder, root)
        if not self.stand_ins:
            raise BadRecord(f"missing video: {folder}")
        self.used_stand_in = True
        return [self.stand_ins[zlib.crc32(folder.encode()) % len(self.stand_ins)].read_bytes()] * STAND_IN_FRAMES


def _rows(path: str | Path, *, source: str | None, split: str, patterns: tuple[str, ...],
          build: Callable[[dict, int, Media, str, str], dict], media: Media) -> Iterator[dict | Rejected]:
    """Every row of the benchmark built into a pair (`build(row, k, media, source, position)`), or rejected."""
    name = source or Path(path).stem
    seen: Counter = Counter()
    for position, row in iter_dataset_rows(path, split, name, patterns):
        if isinstance(row, Rejected):
            yield row
            continue
        record_id = row.get("id", row.get("ID", row.get("pair_id")))
        k = seen[record_id]
        seen[record_id] += 1

        def one(row=row, k=k, position=position) -> dict:
            media.used_stand_in = False
            pair = build(row, k, media, name, position)
            pair["stand_in"] = media.used_stand_in
            return pair

        yield guarded(one, source=name, position=position, record_id=record_id)


def _benchmark_pair(*, group_id: str, k: int, category: str, **fields) -> dict:
    pair = canonical_pair(id=f"{group_id}#{k}", **fields)
    pair.update(group_id=group_id, category=category)
    return pair


# ------------------------------------------------------------------------- VL-RewardBench / MM-RLHF
def _ranked_two(responses: Any, ranking: Any) -> tuple[Any, Any]:
    """(preferred, other) from VL-RewardBench's `response` list and `human_ranking` (rank 0 preferred)."""
    if not isinstance(responses, Sequence) or isinstance(responses, str) or len(responses) != 2:
        raise BadRecord(f"bad field: response must list two responses, got {type(responses).__name__}")
    if not isinstance(ranking, Sequence) or sorted(ranking) != [0, 1]:
        raise BadRecord(f"bad field: human_ranking {ranking!r} (a rank per response: [0, 1] or [1, 0])")
    return responses[list(ranking).index(0)], responses[list(ranking).index(1)]


def _vl_rewardbench_pair(row: dict, k: int, media: Media, source: str, position: str) -> dict:
    group_id = str(row["id"])
    if "response" in row or "human_ranking" in row:  # the publishers' form
        chosen, rejected = _ranked_two(row.get("response"), row.get("human_ranking"))
        prompt = row.get("query")
        if isinstance(prompt, str):  # POVID queries start with an `<image>` marker; the image goes first anyway
            prompt = prompt.removeprefix("<image>").lstrip("\n")
        image = row.get("image") if row.get("image") is not None else row.get("image_path")
    else:  # the flattened pair file
        chosen, rejected, prompt, image = row.get("chosen"), row.get("rejected"), row.get("prompt"), row.get("image")
    return _benchmark_pair(group_id=group_id, k=k, category=vl_rewardbench_category(group_id), source=source,
                           position=position, prompt=prompt, images=[media(image)], chosen=chosen, rejected=rejected)


def read_vl_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                        stand_in_images: str | Path | None = None, split: str = "test") -> Iterator[dict | Rejected]:
    return _rows(path, source=source, split=split, patterns=("*.parquet", "*.jsonl"), build=_vl_rewardbench_pair,
                 media=Media(image_root, stand_in_images))


def _mm_rlhf_pair(row: dict, k: int, media: Media, source: str, position: str) -> dict:
    group_id = str(row["id"])
    if row.get("video") is not None:  # its frames in order, before the question; the run chooses their route
        return _benchmark_pair(group_id=group_id, k=k, category=mm_rlhf_category(str(row["video"])), source=source,
                               position=position, prompt=row.get("prompt") or "", videos=[media.video(row["video"])],
                               chosen=row.get("chosen"), rejected=row.get("rejected"))
    return _benchmark_pair(group_id=group_id, k=k, category=mm_rlhf_category(str(row.get("image") or "")),
                           source=source, position=position, prompt=row.get("prompt"), images=[media(row["image"])],
                           chosen=row.get("chosen"), rejected=row.get("rejected"))


def read_mm_rlhf_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                             stand_in_images: str | Path | None = None, split: str = "train"
                             ) -> Iterator[dict | Rejected]:
    return _rows(path, source=source, split=split, patterns=("*.parquet", "*.jsonl"), build=_mm_rlhf_pair,
                 media=Media(image_root, stand_in_images))


# ------------------------------------------------------------------------- Multimodal RewardBench
def multimodal_rewardbench_category(row: dict) -> str:
    """The benchmark's categories, with safety and reasoning split by id as its own scorer does."""
    category, record_id = str(row.get("Category", "")), str(row.get("ID", "")).lower()
    if category == "safety":
        return "safety/bias" if record_id.startswith("pairs") else "safety/toxicity"
    if category == "reasoning":
        return "reasoning/math" if record_id.startswith("math") else "reasoning/coding"
    return category.rsplit("/", 1)[-1].removesuffix("_task")  # open_generation/correctness_task -> correctness


def _multimodal_rewardbench_pair(row: dict, k: int, media: Media, source: str, position: str) -> dict:
    better = row["Better"]
    if better not in ("Output1", "Output2"):
        raise BadRecord(f"bad field: Better {better!r} (Output1 or Output2)")
    worse = "Output2" if better == "Output1" else "Output1"
    pair = canonical_pair(id=str(row["ID"]) + (f"#{k}" if k else ""), source=source, position=position,
                          prompt=row["Text"], images=[media(row["Image"])], chosen=row[better], rejected=row[worse])
    pair.update(group_id=str(row["ID"]), category=multimodal_rewardbench_category(row))
    return pair


def read_multimodal_rewardbench(path: str | Path, *, source: str | None = None, image_root: str | Path,
                                stand_in_images: str | Path | None = None, split: str = "test"
                                ) -> Iterator[dict | Rejected]:
    """`all_data.json` (a JSON list, or JSONL / Parquet with the same fields); `Better` names the chosen output."""
    return _rows(path, source=source, split=split, patterns=("*.json", "*.jsonl", "*.parquet"),
                 build=_multimodal_rewardbench_pair, media=Media(image_root, stand_in_images))


# ------------------------------------------------------------------------- Multimodal RewardBench 2
_PLACEHOLDER = re.compile(r"<image_\d+>")


def _mmrb2_parts(parts: Any, field: str) -> list[tuple[str, Any]]:
    """`[["text", str] | ["image", path], ...]` (the JSON release) as (kind, value) pairs."""
    if not isinstance(parts, Sequence) or isinstance(parts, str) or not parts:
        raise BadRecord(f"missing field: {field}")
    out = []
    for part in parts:
        if not isinstance(part, Sequence) or len(part) != 2 or part[0] not in ("text", "image"):
            raise BadRecord(f"bad field: {field} part {str(part)[:60]!r} (['text', str] or ['image', path])")
        out.append((part[0], part[1]))
    return out


def _placeholder_parts(text: Any, images: Any, field: str) -> list[tuple[str, Any]]:
    """The hub form: text with `<image_N>` placeholders and the images in order (left-over images after the text)."""
    if not isinstance(text, str):
        raise BadRecord(f"missing field: {field}_text")
    images = list(images or [])
    out: list[tuple[str, Any]] = []
    pieces = _PLACEHOLDER.split(text)
    for i, piece in enumerate(pieces):
        if piece:
            out.append(("text", piece))
        if i < len(pieces) - 1:
            if not images:
                raise BadRecord(f"image mismatch: {field}_text has more placeholders than {field}_images")
            out.append(("image", images.pop(0)))
    return out + [("image", im) for im in images]


def mmrb2_task(path: Path, row: dict) -> str:
    """The task a record belongs to: the file's (or folder's) name, else its annotations' form (reasoning
    grades each response A/B/C; the generation tasks give a list of 1-6 preference scores)."""
    if (name := path.stem if path.is_file() else path.name) in MMRB2_TASKS:
        return name
    notes = row.get("human_annotations")
    if isinstance(notes, str):  # the hub's Parquet keeps them as a JSON string
        try:
            notes = json.loads(notes)
        except json.JSONDecodeError:
            notes = None
    return "reasoning" if isinstance(notes, dict) else "generation"


def _mmrb2_pair(path: Path) -> Callable[[dict, int, Media, str, str], dict]:
    def build(row: dict, k: int, media: Media, source: str, position: str) -> dict:
        task = mmrb2_task(path, row)
        if task != "reasoning":
            raise NotSupported(f"MMRB2 {task} task: judging generated images is out of scope for a reward model "
                               "of responses (the reasoning task is scored)")
        if "pair_id" in row:  # the hub's Parquet
            prompt = _placeholder_parts(row.get("prompt_text"), row.get("prompt_images"), "prompt")
            sides = {s: _placeholder_parts(row.get(f"response_{s}_text"), row.get(f"response_{s}_images"),
                                           f"response_{s}") for s in ("a", "b")}
        else:  # reasoning.json
            if "prompt_content" not in row:
                raise BadRecord("missing field: prompt_content (a *_response_only.json file: build reasoning.json "
                                "with MMRB2's build_from_hf.py)")
            prompt = _mmrb2_parts(row["prompt_content"], "prompt_content")
            sides = {s: _mmrb2_parts((row.get(f"response_{s}") or {}).get("response_content"), f"response_{s}")
                     for s in ("a", "b")}
        chosen = str(row.get("chosen", "")).strip().upper()
        if chosen not in ("A", "B"):
            raise BadRecord(f"bad field: chosen {row.get('chosen')!r} (A or B)")
        other = "b" if chosen == "A" else "a"
        content = [{"type": "text", "text": v} if kind == "text" else {"type": "image"} for kind, v in prompt]

        def response(parts):
            return ("".join(v if kind == "text" else IMAGE_MARKER for kind, v in parts),
                    [media(v) for kind, v in parts if kind == "image"])

        (chosen_text, chosen_images), (other_text, other_images) = response(sides[chosen.lower()]), response(sides[other])
        group_id = str(row.get("id", row.get("pair_id")))
        return _benchmark_pair(group_id=group_id, k=k, category=str(row.get("prompt_source") or "other"),
                               source=source, position=position, prompt=[{"role": "user", "content": content}],
                               images=[media(v) for kind, v in prompt if kind == "image"],
                               chosen=chosen_text, rejected=other_text, chosen_images=chosen_images,
                               rejected_images=other_images)
    return build


def read_mmrb2(path: str | Path, *, source: str | None = None, image_root: str | Path,
               stand_in_images: str | Path | None = None, split: str = "test") -> Iterator[dict | Rejected]:
    """Multimodal RewardBench 2 (facebookresearch/MMRB2), its reasoning ("thinking with images") task.

    `reasoning.json` (`{"pairs": [...]}`, built by the repository's `build_from_hf.py`): `id`,
    `prompt_source`, `prompt_content` and each `response_{a,b}.response_content` as lists of
    `["text", str]` / `["image", path]` parts (paths relative to the file's folder), `chosen`
    "A" or "B". Or the hub's Parquet (rl-research/multimodal-rewardbench-2, config `reasoning`):
    `pair_id`, `prompt_text` / `response_{a,b}_text` with `<image_N>` placeholders and the
    `*_images` in order. Images inside responses are kept (`chosen_images`, `rejected_images`,
    `<image>` marks in the text). Category = `prompt_source`. Records of the generation tasks
    (t2i, edit, interleaved; by file name) are reported as not supported.
    """
    return _rows(path, source=source, split=split, patterns=("*.json", "*.jsonl", "*.parquet"),
                 build=_mmrb2_pair(Path(path)), media=Media(image_root, stand_in_images))


# the benchmark readers number repeated ids across the whole source, so each source is read as one part
for _reader in (read_vl_rewardbench, read_mm_rlhf_rewardbench, read_multimodal_rewardbench, read_mmrb2):
    _reader.splittable = False
