"""Small encoded images for request payloads."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png(colour=(200, 30, 30), size=(56, 56), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode != "L" else 128).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)


def huge_png(side: int = 5000) -> bytes:
    """A tiny file whose header claims side x side pixels (zeros compress well)."""
    return png(colour=(0, 0, 0), size=(side, side))


def noise_png(rng, *, smallest: int = 20, largest: int = 200) -> bytes:
    """A PNG of random pixels and a random size between `smallest` and `largest` a side, drawn from `rng`."""
    import numpy as np

    w, h = rng.randint(smallest, largest), rng.randint(smallest, largest)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(rng.randint(0, 10**6)).integers(0, 255, (h, w, 3), np.uint8)).save(
        buf, format="PNG")
    return buf.getvalue()


def transformers_score(path, prompt, response) -> float:
    """A `*ForSequenceClassification` checkpoint's score by transformers' own class, on the token ids of the
    conversation as the chat template writes it (prompt, response, end of turn)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor

    encoder = PairEncoder(load_processor(path))
    ids = np.concatenate([encoder.encode_prompt(prompt)["prompt_ids"], encoder.encode_response(response)])
    with torch.no_grad():
        return float(AutoModelForSequenceClassification.from_pretrained(path).eval()(
            input_ids=torch.as_tensor(ids)[None]).logits[0, 0])
