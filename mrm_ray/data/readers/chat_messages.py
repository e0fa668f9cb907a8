"""Chat-message multimodal pairs (the RLAIF-V sample's layout).

Each JSON line has `id`, `prompt` (user turns whose content parts include
`{"type": "image_url", "image_url": {"url": "name.jpg"}}`), and `chosen` / `rejected`
as assistant turns (or strings), optionally `margin`. Image names resolve against an
image root (default: the `image/` folder beside the file, else the file's folder) and may
not escape it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_json_records, read_image_file
from mrm_ray.data.schema import canonical_pair


def _image_name(part: dict[str, Any]) -> str:
    ref = part.get("image_url", part.get("image"))
    if isinstance(ref, dict):
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise BadRecord("missing image: image part without a file name")
    return ref


def _pair(row: dict, *, root: Path, source: str, position: str) -> dict:
    images, messages = [], []
    for message in row["prompt"]:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and (part.get("type") in ("image_url", "image") or "image_url" in part):
                    images.append(read_image_file(root, _image_name(part)))
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            content = parts
        messages.append({"role": message.get("role", "user"), "content": content})
    return canonical_pair(id=row.get("id", position), source=source, position=position, prompt=messages,
                          images=images, chosen=row.get("chosen"), rejected=row.get("rejected"),
                          margin=row.get("margin"))


def read_chat_messages(path: str | Path, *, source: str | None = None,
                       image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.jsonl", "*.json")):
        root = Path(image_root) if image_root else (
            file.parent / "image" if (file.parent / "image").is_dir() else file.parent)
        name = source or file.stem
        yield from build_each(iter_json_records(file, name), source=name,
                              build=lambda row, pos: _pair(row, root=root, source=name, position=pos))
