"""Encode prompts and their responses with the Qwen2.5-VL processor and chat template.

A prompt (chat messages or a plain string, plus its images) becomes token ids with the
image placeholders expanded, `mm_token_type_ids`, `pixel_values` and `image_grid_thw`.
A response becomes its text tokens followed by `<|im_end|>`, the token the reward is read
at. A group (one prompt, K responses; a pair is K = 2) keeps the prompt once: the packed
forward (model/packing.py) runs it, and its images, once.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

END_OF_TURN = "<|im_end|>"
_IMAGE_KEYS = ("image", "image_url")


def response_text(response: Any) -> str:
    """Text of a response given as a string, a message, or a list of assistant messages.

    Published sets nest text as `content[].text` or `content[].content[].text`.
    """
    if isinstance(response, str):
        return response
    if isinstance(response, Mapping):
        if "content" in response:
            return response_text(response["content"])
        if "text" in response:
            return str(response["text"])
        if "value" in response:
            return str(response["value"])
        raise ValueError(f"response part has no text: keys {sorted(response)}")
    if isinstance(response, Sequence):
        return "".join(response_text(part) for part in response)
    raise TypeError(f"response must be text or messages, got {type(response).__name__}")


def _is_image_part(part: Any) -> bool:
    return isinstance(part, Mapping) and (part.get("type") in _IMAGE_KEYS or any(k in part for k in _IMAGE_KEYS))


def count_image_parts(messages: Sequence[Mapping]) -> int:
    return sum(_is_image_part(p) for m in messages if not isinstance(m["content"], str) for p in m["content"])


def as_messages(prompt: str | Sequence[Mapping], n_images: int) -> list[dict]:
    """Chat messages for a prompt; a plain string becomes one user turn with its images first."""
    if isinstance(prompt, str):
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        return [{"role": "user", "content": content}]
    messages = [dict(m) for m in prompt]
    found = count_image_parts(messages)
    if found != n_images:
        raise ValueError(f"prompt has {found} image placeholders but {n_images} images were given")
    return messages


def load_image(image: Any):
    """A PIL RGB image from encoded bytes, a `{bytes: ...}` struct or a PIL image; never a path."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image
    else:
        data = image.get("bytes") if isinstance(image, Mapping) else image
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"image must be encoded bytes or a PIL image, got {type(data).__name__}")
        pil = Image.open(io.BytesIO(bytes(data)))
        pil.load()
    return pil if pil.mode == "RGB" else pil.convert("RGB")


class PairEncoder:
    """Turns prompts and responses into model-ready numpy features with one processor."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_token_id = self.tokenizer.pad_token_id

    def encode_prompt(self, prompt: str | Sequence[Mapping], images: Sequence[Any] = ()) -> dict[str, np.ndarray]:
        pil_images = [load_image(im) for im in images]
        messages = as_messages(prompt, len(pil_images))
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(text=[text], images=pil_images or None, return_tensors="np")
        out = {
            "prompt_ids": enc["input_ids"][0].astype(np.int64),
            "prompt_mm_token_type_ids": enc["mm_token_type_ids"][0].astype(np.int64),
        }
        if pil_images:
            out["pixel_values"] = enc["pixel_values"].astype(np.float32)
            out["image_grid_thw"] = enc["image_grid_thw"].astype(np.int64)
        return out

    def encode_response(self, response: Any) -> np.ndarray:
        text = response_text(response) + END_OF_TURN
        return np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)

    def encode_pair(self, prompt, images, chosen, rejected, *, margin: float | None = None) -> dict[str, Any]:
        """One pair: prompt features once, plus chosen and rejected response ids."""
        out = self.encode_prompt(prompt, images)
        out["chosen_ids"] = self.encode_response(chosen)
        out["rejected_ids"] = self.encode_response(rejected)
        if margin is not None:
            out["margin"] = float(margin)
        return out

    def encode_group(self, prompt, images, responses: Sequence[Any]) -> dict[str, Any]:
        """One prompt with K >= 1 responses: prompt features once, `responses` a list of id arrays."""
        if not responses:
            raise ValueError("a group needs at least one response")
        out = self.encode_prompt(prompt, images)
        out["responses"] = [self.encode_response(r) for r in responses]
        return out

    def encode_item(self, prompt, images, response) -> dict[str, Any]:
        """One prompt/response to score on its own."""
        out = self.encode_prompt(prompt, images)
        out["response_ids"] = self.encode_response(response)
        return out
