"""A preference corpus with every kind of bad record mixed among good ones."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mrm_ray.data.synthetic import image_grounded_pairs

# reason kind (the text before ':') -> how many records of that kind the corpus holds
BAD_KINDS = {
    "corrupt image": 2,  # random bytes, and a truncated JPEG
    "missing image": 1,
    "malformed JSON": 1,
    "missing field": 1,
    "empty field": 1,
    "chosen identical to rejected": 1,
    "unsupported image mode": 4,  # CMYK, palette, 16-bit, alpha
    "image too small": 1,  # 1x1
    "image too large": 1,
    "prompt too long": 1,
    "identical after truncation": 1,  # differs only past max_response_tokens
}
MODE_KINDS = 4


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _row(pair_id: str, image: str | None, prompt_text: str, chosen, rejected) -> dict:
    content = ([{"type": "image_url", "image_url": {"url": image}}] if image else []) + [
        {"type": "text", "text": prompt_text}]
    row = {"id": pair_id, "prompt": [{"role": "user", "content": content}]}
    if chosen is not None:
        row["chosen"] = [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}]
    if rejected is not None:
        row["rejected"] = rejected
    return row


def write_corpus(root: Path, *, n_image: int = 40, n_text: int = 20, seed: int = 0) -> dict[str, Path]:
    """Write an image source and a text-only source; bad records sit in the image source."""
    images = root / "image"
    images.mkdir(parents=True)
    lines = []
    for i, pair in enumerate(image_grounded_pairs(n_image, seed=seed)):
        (images / f"good{i}.png").write_bytes(pair["images"][0])
        lines.append(json.dumps(_row(f"good-{i}", f"good{i}.png", pair["prompt"], pair["chosen"], pair["rejected"])))
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpeg = _encode(rgb, "JPEG")
    bad_images = {
        "random.jpg": rng.integers(0, 255, 500, dtype=np.uint8).tobytes(),
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "sixteen.png": _encode(Image.fromarray((rng.integers(0, 65535, (64, 64))).astype(np.uint16)), "PNG"),
        "alpha.png": _encode(rgb.convert("RGBA"), "PNG"),
        "tiny.png": _encode(Image.new("RGB", (1, 1)), "PNG"),
        "huge.png": _encode(Image.new("RGB", (3000, 3000), "white"), "PNG"),
    }
    for name, data in bad_images.items():
        (images / name).write_bytes(data)
        lines.append(json.dumps(_row(f"bad-{name}", name, "What is shown?", "A picture.", "Nothing.")))
    lines.append(json.dumps(_row("bad-missing", "nowhere.png", "What is shown?", "A picture.", "Nothing.")))
    lines.append('{"id": "bad-json", "prompt": [')
    lines.append(json.dumps(_row("bad-no-rejected", None, "Question?", "Answer.", None)))
    lines.append(json.dumps(_row("bad-empty", None, "Question?", "", "Answer.")))
    lines.append(json.dumps(_row("bad-same", None, "Question?", "Same answer.", "Same answer.")))
    lines.append(json.dumps(_row("bad-long", None, "word " * 3000, "Yes.", "No.")))
    lines.append(json.dumps(_row("bad-cut", None, "Question?", "word " * 80 + "yes.", "word " * 80 + "no.")))
    order = np.random.default_rng(seed + 1).permutation(len(lines))  # bad records among good ones
    image_file = root / "image_pairs.jsonl"
    image_file.write_text("\n".join(lines[i] for i in order) + "\n")

    text_file = root / "text_pairs.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    text_file.write_text("\n".join(json.dumps(_row(
        f"text-{i}", None, f"Which word comes after {words[i % 7]}?", f"It is {words[i % 7 + 1]}.",
        f"It is {words[(i % 7 + 3) % 8]}.")) for i in range(n_text)) + "\n")
    return {"image": image_file, "text": text_file}
