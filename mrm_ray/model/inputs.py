"""Encode prompts and their responses with the Qwen2.5-VL processor and chat template.

A prompt (chat messages or a plain string, plus its images) becomes token ids with the
image placeholders expanded, `mm_token_type_ids`, `pixel_values` and `image_grid_thw`.
A response becomes its text tokens followed by `<|im_end|>`, the token the reward is read
at. A group (one prompt, K responses; a pair is K = 2) keeps the prompt once: the packed
forward (model/packing.py) runs it, and its images, once.

A response with images inside it (`<image>` marks in its text, one image each) is its own
group of one: the prompt, then the response up to and including its last image, form the
group's prompt (images expanded by the processor, as in a prompt), and the text after the
last image, with `<|im_end|>`, is the response. Its positions are then exactly those of the
whole sequence, so the packed forward scores it unchanged; only the prompt is not shared.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

END_OF_TURN = "<|im_end|>"
RESPONSE_IMAGE = "<image>"  # where an image sits inside a response's text (when the response has images)
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


_REPLY = "\ue000"  # a private-use character standing for the reply while the template renders it


def prompt_text(processor, messages: Sequence[Mapping]) -> str:
    """The chat template's rendering of `messages` followed by an assistant reply, cut where the reply's text
    starts: the prompt as the template writes it before a final answer (for Qwen3 and Qwen3.5 that includes
    the empty think block their templates put there), so prompt + response is the template's own rendering
    of the whole conversation, up to the `<|im_end|>` the reward is read at."""
    text = processor.apply_chat_template([*messages, {"role": "assistant", "content": _REPLY}], tokenize=False)
    if text.count(_REPLY) != 1:
        raise ValueError("the chat template did not render the assistant reply once; cannot place the response")
    return text[:text.index(_REPLY)]


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
        text = prompt_text(self.processor, messages)
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

    def _image_span(self) -> str:
        """How the chat template writes one image (`<|vision_start|><|image_pad|><|vision_end|>` for Qwen)."""
        if not hasattr(self, "_span"):
            text = self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": "\x01"}, {"type": "image"},
                                              {"type": "text", "text": "\x02"}]}], tokenize=False)
            self._span = text[text.index("\x01") + 1:text.index("\x02")]
        return self._span

    def encode_response_images(self, response: Any, images: Sequence[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A response with images inside: (the part up to its last image, as prompt features to append;
        the text after it with `<|im_end|>`, as ids)."""
        segments = response_text(response).split(RESPONSE_IMAGE)
        if len(segments) - 1 != len(images):
            raise ValueError(f"response has {len(segments) - 1} {RESPONSE_IMAGE} marks but {len(images)} images")
        ids, mm, pixels, grids = [], [], [], []
        for segment, image in zip(segments, images):
            ids.append(np.asarray(self.tokenizer(segment, add_special_tokens=False)["input_ids"], np.int64))
            mm.append(np.zeros(len(ids[-1]), np.int64))
            enc = self.processor(text=[self._image_span()], images=[load_image(image)], return_tensors="np")
            ids.append(enc["input_ids"][0].astype(np.int64))
            mm.append(enc["mm_token_type_ids"][0].astype(np.int64))
            pixels.append(enc["pixel_values"].astype(np.float32))
            grids.append(enc["image_grid_thw"].astype(np.int64))
        prefix = {"prompt_ids": np.concatenate(ids), "prompt_mm_token_type_ids": np.concatenate(mm),
                  "pixel_values": np.concatenate(pixels), "image_grid_thw": np.concatenate(grids)}
        return prefix, self.encode_response(segments[-1])

    def encode_groups(self, prompt, images, responses: Sequence[Any],
                      response_images: Sequence[Sequence[Any]] | None = None
                      ) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
        """Groups for one prompt's responses, and where each response landed, (group, index in it): the
        text responses share one group; each response with images inside is a group of its own."""
        response_images = list(response_images or [()] * len(responses))
        if len(response_images) != len(responses):
            raise ValueError(f"{len(response_images)} response image lists for {len(responses)} responses")
        text_only = [k for k, shown in enumerate(response_images) if not shown]
        groups, where = [], [(0, 0)] * len(responses)
        base = self.encode_prompt(prompt, images)
        if text_only:
            groups.append({**base, "responses": [self.encode_response(responses[k]) for k in text_only]})
            for j, k in enumerate(text_only):
                where[k] = (0, j)
        for k, shown in enumerate(response_images):
            if shown:
                prefix, tail = self.encode_response_images(responses[k], shown)
                group = {key: np.concatenate([base[key], prefix[key]]) if key in base else prefix[key]
                         for key in prefix}
                where[k] = (len(groups), 0)
                groups.append({**group, "responses": [tail]})
        return groups, where

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
