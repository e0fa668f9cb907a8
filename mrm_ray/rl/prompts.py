"""RL prompts: a question (text or chat messages), its images, and a reference answer.

Read from JSONL or Parquet in our layout (`prompt`, `images`, `answer`) or veRL's (`prompt` as chat
messages with `<image>` markers, `images` as `{bytes, path}` structs, `reward_model.ground_truth`),
through the one input normaliser (model/inputs.py): image files are read from under the prompt
file's folder only, once, here, so actors only ever receive bytes. A row that cannot be used is
quarantined with its reason (data/quarantine.py's schema) and the others are kept. With no file,
generated image questions are used.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from pathlib import Path

from mrm_ray.data.quarantine import Rejected, write_quarantine
from mrm_ray.model.inputs import InvalidInput, as_messages, image_bytes

SOURCE = "prompts"


def synthetic_prompts(n: int, *, seed: int = 0, task: str = "colour") -> list[dict]:
    """Questions about a generated picture; the answer is the chosen response's last word."""
    from mrm_ray.data.synthetic import image_grounded_pairs

    out = []
    for pair in image_grounded_pairs(n, seed=seed, task=task):
        answer = pair["chosen"].rstrip(".").split()[-2 if task == "count" else -1]
        out.append({"id": pair["id"], "prompt": pair["prompt"], "images": pair["images"], "answer": answer})
    return out


def _answer(row: Mapping) -> str | None:
    for key in ("answer", "ground_truth", "solution"):
        if row.get(key) is not None:
            return str(row[key])
    reward_model = row.get("reward_model")
    if isinstance(reward_model, Mapping) and reward_model.get("ground_truth") is not None:
        return str(reward_model["ground_truth"])
    return None


def parse_row(row: Mapping, base: Path, index: int) -> dict:
    """One usable prompt from a file row (its images read from under `base`), or InvalidInput saying what is
    wrong with it."""
    from PIL import Image

    prompt = row.get("prompt", row.get("question"))
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise InvalidInput("missing field: prompt (expected a 'prompt' or 'question' field)")
    images = [image_bytes(im, root=base) for im in (row.get("images") or [])]
    if row.get("image") is not None:
        images.append(image_bytes(row["image"], root=base))
    for k, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
        except Exception as exc:
            raise InvalidInput(f"corrupt image: images[{k}] is not a readable image ({exc})") from None
    return {"id": str(row.get("id", index)), "prompt": as_messages(prompt, len(images)), "images": images,
            "answer": _answer(row)}


def read_prompt_file(path: str | Path) -> tuple[list[dict], list[Rejected]]:
    """(prompts, quarantined rows with their reasons) from a JSONL or Parquet file."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = list(enumerate(pq.read_table(path).to_pylist()))
    else:
        rows = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((line_no, InvalidInput(f"malformed JSON: {exc.msg}")))
    good, bad = [], []
    for i, (at, row) in enumerate(rows):
        try:
            if isinstance(row, InvalidInput):
                raise row
            if not isinstance(row, Mapping):
                raise InvalidInput(f"malformed JSON: a line must be an object, got {type(row).__name__}")
            good.append(parse_row(row, path.parent, i))
        except (InvalidInput, TypeError, KeyError) as exc:
            reason = exc.reason if isinstance(exc, InvalidInput) else f"bad record: {exc}"
            record_id = row.get("id") if isinstance(row, Mapping) else None
            bad.append(Rejected(SOURCE, f"{path.name}:{at}", reason, None if record_id is None else str(record_id)))
    return good, bad


def load_prompts(cfg, folder) -> tuple[list[dict], list[dict]]:
    """(train, held-out) prompts; bad rows go to the run folder's quarantine.jsonl with their reasons."""
    p = cfg.prompts
    if p.path:
        prompts, bad = read_prompt_file(p.path)
        if bad:
            write_quarantine(bad, folder.local)
            where = folder.push("quarantine.jsonl")
            print(f"[grpo] {len(bad)} of {len(prompts) + len(bad)} prompt rows quarantined ({where}); first: "
                  f"{bad[0].position}: {bad[0].reason}", flush=True)
    else:
        prompts = synthetic_prompts(p.synthetic + p.held_out, seed=p.seed, task=p.task)
    if len(prompts) <= p.held_out:
        raise ValueError(f"{len(prompts)} usable prompts leave none to train on after {p.held_out} held out")
    order = list(range(len(prompts)))
    random.Random(p.seed).shuffle(order)
    held = [prompts[i] for i in order[: p.held_out]]
    train = [prompts[i] for i in order[p.held_out:]]
    return train, held
