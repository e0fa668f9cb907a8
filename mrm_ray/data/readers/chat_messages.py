"""Chat-message multimodal pairs (the RLAIF-V sample's layout).

Each JSON line has `id`, `prompt` (user turns whose content parts include
`{"type": "image_url", "image_url": {"url": "name.jpg"}}`), and `chosen` / `rejected`
as assistant turns. Image names resolve against an image root (default: the `image/`
folder beside the file, else the file's folder) and may not escape it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def resolve_under(root: Path, name: str) -> Path:
    """`root / name`, refusing absolute paths, URLs and `..` that leave `root`."""
    if "://" in name:
        raise ValueError(f"image {name!r} is a URL; only files under {root} are read")
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"image {name!r} resolves outside the image root {root}")
    return path


def _image_name(part: dict[str, Any]) -> str:
    ref = part.get("image_url", part.get("image"))
    if isinstance(ref, dict):
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"image part without a file name: {part}")
    return ref


def read_chat_messages(path: str | Path, *, image_root: str | Path | None = None,
                       source: str | None = None) -> Iterator[dict]:
    """Yield canonical pairs: id, source, prompt (messages), images (bytes), chosen, rejected."""
    path = Path(path)
    if image_root is None:
        image_root = path.parent / "image" if (path.parent / "image").is_dir() else path.parent
    root = Path(image_root)
    source = source or path.stem
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            images, messages = [], []
            for message in row["prompt"]:
                content = message["content"]
                if isinstance(content, list):
                    parts = []
                    for part in content:
                        if part.get("type") in ("image_url", "image") or "image_url" in part:
                            images.append(resolve_under(root, _image_name(part)).read_bytes())
                            parts.append({"type": "image"})
                        else:
                            parts.append(part)
                    content = parts
                messages.append({"role": message["role"], "content": content})
            yield {
                "id": str(row.get("id", f"{path.name}:{line_no}")),
                "source": source,
                "prompt": messages,
                "images": images,
                "chosen": row["chosen"],
                "rejected": row["rejected"],
                "margin": row.get("margin"),
            }
