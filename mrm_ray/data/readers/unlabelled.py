"""Unlabelled records, what `mrm-ray label` labels: a prompt, its images, and two or more responses.

Each JSON line (or JSON array entry, or Parquet row) has `prompt` (text, or chat messages whose image
parts are `{"type": "image"}`, `image_url` parts or `<image>` marks), optionally `images` (file names
under the image root, default the file's folder, or inline bytes / base64 / data URLs, one per image
part), `responses` (two or more texts or assistant messages), and optionally `id`. No preference is
read: which response is better is the labeller's to say.

    {"id": "r1", "prompt": "What is in the picture?", "images": ["cat.jpg"], "responses": ["A cat.", "A dog."]}

Bad records (no prompt, fewer than two responses, empty or all identical responses, a missing image)
are quarantined with the reason, as every reader's are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mrm_ray.data.quarantine import BadRecord, Rejected
from mrm_ray.data.readers.base import build_each, expand_files, iter_json_records, iter_parquet_rows
from mrm_ray.data.schema import normalize_prompt, text_field
from mrm_ray.model.inputs import image_bytes, is_image_part


def unlabelled_record(*, id: str, source: str, position: str, prompt, images=(), responses=()) -> dict:
    """A checked unlabelled record: canonical prompt messages, image bytes, response texts; BadRecord else."""
    if prompt is None:
        raise BadRecord("missing field: prompt")
    messages = normalize_prompt(prompt, len(images))
    if not any(p["type"] == "text" and p["text"].strip() for m in messages for p in m["content"]) and not images:
        raise BadRecord("empty field: prompt")
    if not isinstance(responses, (list, tuple)) or len(responses) < 2:
        raise BadRecord(f"bad field: responses needs two or more responses, got "
                        f"{len(responses) if isinstance(responses, (list, tuple)) else type(responses).__name__}")
    texts = [text_field(response, f"responses[{i}]") for i, response in enumerate(responses)]
    if len({t.strip() for t in texts}) == 1:
        raise BadRecord(f"all {len(texts)} responses identical")
    return {"id": str(id), "source": source, "position": position, "prompt": messages,
            "images": [bytes(b) for b in images], "responses": texts}


def _record(row: dict, *, root: Path, source: str, position: str) -> dict:
    """The row's prompt and its images in the order the prompt shows them: `{"type": "image"}` placeholders take
    the next of `images`, parts that carry their image (`image_url`) read it where they stand."""
    prompt, given = row.get("prompt"), [image_bytes(im, root=root) for im in row.get("images") or ()]
    if not isinstance(prompt, list):
        return unlabelled_record(id=row.get("id", position), source=source, position=position, prompt=prompt,
                                 images=given, responses=row.get("responses"))
    images, messages = [], []
    for message in prompt:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts = []
            for part in content:
                if is_image_part(part):
                    if part.get("type") != "image" or part.get("image") is not None:
                        images.append(image_bytes(part, root=root))
                    elif given:
                        images.append(given.pop(0))
                    else:
                        raise BadRecord("image mismatch: more image placeholders than images")
                    part = {"type": "image"}
                parts.append(part)
            message = {**message, "content": parts}
        messages.append(message)
    if given:
        raise BadRecord(f"image mismatch: {len(given)} image(s) have no image placeholder")
    return unlabelled_record(id=row.get("id", position), source=source, position=position, prompt=messages,
                             images=images, responses=row.get("responses"))


def read_unlabelled(path: str | Path, *, source: str | None = None,
                    image_root: str | Path | None = None) -> Iterator[dict | Rejected]:
    for file in expand_files(path, ("*.jsonl", "*.json", "*.parquet")):
        root = Path(image_root) if image_root else file.parent
        name = source or file.stem
        rows = iter_parquet_rows(file, name) if file.suffix == ".parquet" else iter_json_records(file, name)
        yield from build_each(rows, source=name, build=lambda row, pos: _record(row, root=root, source=name,
                                                                                 position=pos))
