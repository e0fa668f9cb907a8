"""RL prompts: a question (text or chat messages), its images, and a reference answer.

Read from JSONL or Parquet in our layout (`prompt`, `images`, `answer`) or veRL's
(`prompt` as chat messages with `<image>` markers, `images` as `{bytes, path}` structs,
`reward_model.ground_truth`). Image paths are resolved beside the file and read once here,
so actors only ever receive bytes. A row that cannot be used is quarantined with its
reason and the others are kept. With no file, generated image questions are used.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

IMAGE_MARKER = "<image>"


def synthetic_prompts(n: int, *, seed: int = 0, task: str = "colour") -> list[dict]:
    """Questions about a generated picture; the answer is the chosen response's last word."""
    from mrm_ray.data.synthetic import image_grounded_pairs

    out = []
    for pair in image_grounded_pairs(n, seed=seed, task=task):
        answer = pair["chosen"].rstrip(".").split()[-2 if task == "count" else -1]
        out.append({"id": pair["id"], "prompt": pair["prompt"], "images": pair["images"], "answer": answer})
    return out


def _messages(prompt: Any, n_images: int) -> Any:
    """veRL-style messages with `<image>` markers in text -> messages with image parts."""
    if isinstance(prompt, str) or not any(isinstance(m.get("content"), str) and IMAGE_MARKER in m["content"]
                                          for m in prompt):
        return prompt
    out = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str) and IMAGE_MARKER in content:
            parts: list[dict] = []
            for i, text in enumerate(content.split(IMAGE_MARKER)):
                if i:
                    parts.append({"type": "image"})
                if text.strip():
                    parts.append({"type": "text", "text": text})
            content = parts
        out.append({**message, "content": content})
    return out


def _image_bytes(image: Any, base: Path) -> bytes:
    if isinstance(image, Mapping):
        data = image.get("bytes")
        if isinstance(data, str):  # JSON cannot hold bytes: base64 text
            import base64
            import binascii

            try:
                return base64.b64decode(data, validate=True)
            except binascii.Error:
                raise ValueError("image bytes given as text are not base64") from None
        if data:
            return bytes(data)
        image = image.get("path")
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, str) and image:
        path = (base / image).resolve()
        if not path.is_file():
            raise ValueError(f"image file not found: {path}")
        return path.read_bytes()
    raise ValueError(f"image must be bytes, a {{bytes, path}} struct or a path, got {type(image).__name__}")


def _answer(row: Mapping) -> str | None:
    for key in ("answer", "ground_truth", "solution"):
        if row.get(key) is not None:
            return str(row[key])
    reward_model = row.get("reward_model")
    if isinstance(reward_model, Mapping) and reward_model.get("ground_truth") is not None:
        return str(reward_model["ground_truth"])
    return None


def parse_row(row: Mapping, base: Path, index: int) -> dict:
    """One usable prompt from a file row, or ValueError saying what is wrong with it."""
    from PIL import Image

    from mrm_ray.model.inputs import as_messages

    prompt = row.get("prompt", row.get("question"))
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError("no prompt (expected a 'prompt' or 'question' field)")
    images = [_image_bytes(im, base) for im in (row.get("images") or [])]
    if row.get("image") is not None:
        images.append(_image_bytes(row["image"], base))
    for k, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception as exc:
            raise ValueError(f"images[{k}] is not a readable image ({exc})") from None
    prompt = _messages(prompt, len(images))
    as_messages(prompt, len(images))  # placeholders and images must agree
    return {"id": str(row.get("id", index)), "prompt": prompt, "images": images, "answer": _answer(row)}


def read_prompt_file(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(prompts, quarantined rows with reasons) from a JSONL or Parquet file."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        raw = [None] * len(rows)
    else:
        rows, raw = [], []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            raw.append(line)
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                rows.append(exc)
    good, bad = [], []
    for i, row in enumerate(rows):
        try:
            if isinstance(row, Exception):
                raise ValueError(f"malformed JSON ({row})")
            good.append(parse_row(row, path.parent, i))
        except (ValueError, TypeError, KeyError) as exc:
            bad.append({"row": i, "reason": str(exc), "raw": raw[i][:2000] if raw[i] else None})
    return good, bad


def load_prompts(cfg, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(train, held-out) prompts; bad rows go to run_dir/quarantine.jsonl with their reasons."""
    from mrm_ray.atomic import atomic_file

    p = cfg.prompts
    if p.path:
        prompts, bad = read_prompt_file(p.path)
        if bad:
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(run_dir / "quarantine.jsonl", "w") as f:
                f.writelines(json.dumps(b) + "\n" for b in bad)
            print(f"[grpo] {len(bad)} of {len(prompts) + len(bad)} prompt rows quarantined "
                  f"({run_dir / 'quarantine.jsonl'}); first: row {bad[0]['row']}: {bad[0]['reason']}", flush=True)
    else:
        prompts = synthetic_prompts(p.synthetic + p.held_out, seed=p.seed, task=p.task)
    if len(prompts) <= p.held_out:
        raise ValueError(f"{len(prompts)} usable prompts leave none to train on after {p.held_out} held out")
    order = list(range(len(prompts)))
    random.Random(p.seed).shuffle(order)
    held = [prompts[i] for i in order[: p.held_out]]
    train = [prompts[i] for i in order[p.held_out:]]
    return train, held
