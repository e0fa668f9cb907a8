"""ShareGPT preference pairs, as LLaMA-Factory publishes them (e.g. `dpo_en_demo.json`).

Each record has `conversations` (turns `{from, value}`, `from` one of human/user,
gpt/assistant, system), `chosen` and `rejected` (one `{from, value}` turn each), an
optional top-level `system` string and an optional `images` list of file names (under an
image root, default the file's folder). `<image>` in a turn's text marks where each image
goes; with images but no `<image>` tags the images lead the first user turn, as
LLaMA-Factory does. `videos` (each a list of frame names or a folder of frames) go where
`<video>` marks them, or lead the first user turn, and stay videos for the run's route
(model/inputs.py). The conversation must end on a user turn: the
pair answers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_json_records, read_video
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import image_bytes, marker_parts

ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


VIDEO_TAG = "<video>"


def _parts(text: str) -> list[dict]:
    """A turn's text split at `<video>` and `<image>` marks into text, video and image parts."""
    parts: list[dict] = []
    for i, piece in enumerate(text.split(VIDEO_TAG)):
        if i:
            parts.append({"type": "video"})
        parts += marker_parts(piece)
    return parts


def _messages(row: dict, n_images: int, n_videos: int = 0) -> list[dict]:
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise BadRecord("missing field: conversations")
    messages = [{"role": "system", "content": [{"type": "text", "text": row["system"]}]}] if row.get("system") else []
    for turn in turns:
        role = ROLE_MAP.get(turn.get("from"))
        if role is None:
            raise BadRecord(f"unsupported role: {turn.get('from')!r}")
        if not isinstance(turn.get("value"), str):
            raise BadRecord(f"missing field: value in a {turn.get('from')} turn")
        messages.append({"role": role, "content": _parts(turn["value"])})
    if messages[-1]["role"] != "user":
        raise BadRecord(f"bad conversation: last turn is {messages[-1]['role']}, not user")
    first_user = next(m for m in messages if m["role"] == "user")
    for kind, n in (("image", n_images), ("video", n_videos)):  # untagged media lead the first user turn
        if n and not any(p["type"] == kind for m in messages for p in m["content"]):
            first_user["content"] = [{"type": kind}] * n + first_user["content"]
    return messages


def _pair(row: dict, *, root: Path, source: str, position: str) -> dict:
    images = [image_bytes(name, root=root) for name in row.get("images") or []]
    videos = [read_video(video, root) for video in row.get("videos") or []]
    return canonical_pair(id=row.get("id", position), source=source, position=position,
                          prompt=_messages(row, len(images), len(videos)), images=images, videos=videos,
                          chosen=row.get("chosen"), rejected=row.get("rejected"))


def read_sharegpt(path: str | Path, *, source: str | None = None,
                  image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.json", "*.jsonl")):
        root = Path(image_root) if image_root else file.parent
        name = source or file.stem
        yield from build_each(iter_json_records(file, name), source=name,
                              build=lambda row, pos: _pair(row, root=root, source=name, position=pos))
