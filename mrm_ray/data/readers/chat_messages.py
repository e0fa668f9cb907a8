"""Chat-message multimodal pairs (the RLAIF-V sample's layout).

Each JSON line has `id`, `prompt` (user turns whose content parts include
`{"type": "image_url", "image_url": {"url": "name.jpg"}}`), and `chosen` / `rejected`
as assistant turns (or strings), optionally `margin`. Image names resolve against an
image root (default: the `image/` folder beside the file, else the file's folder) and may
not escape it. A prompt may be a multi-turn conversation (images in any user turn), and a part
`{"type": "video", "video": [frame names]}` (or a folder of frames, `"video": "clips/a"`) is a video:
its frames in order (a folder's sampled evenly to 16), kept as a video for the run's route
(model/inputs.py); a video with no frames, too many or frames of different sizes is quarantined.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mrm_ray.data.quarantine import Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_json_records, read_video
from mrm_ray.data.schema import canonical_pair
from mrm_ray.model.inputs import image_bytes, is_image_part, is_video_part


def _pair(row: dict, *, root: Path, source: str, position: str) -> dict:
    images, videos, messages = [], [], []
    for message in row["prompt"]:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if is_video_part(part):
                    videos.append(read_video(part.get("video"), root))
                    parts.append({"type": "video"})
                elif is_image_part(part):
                    images.append(image_bytes(part, root=root))
                    parts.append({"type": "image"})
                else:
                    parts.append(part)
            content = parts
        messages.append({"role": message.get("role", "user"), "content": content})
    return canonical_pair(id=row.get("id", position), source=source, position=position, prompt=messages,
                          images=images, chosen=row.get("chosen"), rejected=row.get("rejected"),
                          margin=row.get("margin"), videos=videos)


def read_chat_messages(path: str | Path, *, source: str | None = None,
                       image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.jsonl", "*.json")):
        root = Path(image_root) if image_root else (
            file.parent / "image" if (file.parent / "image").is_dir() else file.parent)
        name = source or file.stem
        yield from build_each(iter_json_records(file, name), source=name,
                              build=lambda row, pos: _pair(row, root=root, source=name, position=pos))
