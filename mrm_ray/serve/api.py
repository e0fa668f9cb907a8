"""The HTTP API: request/response models, limits, and turning a request into model inputs.

Everything a client sends is checked here, in the ingress, before any member sees it, so a
bad item costs one 4xx naming its field and never a member's batch. Images are accepted
only inline (base64 or `data:` URLs): the server never opens a path or fetches a URL.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.I)


class BadInput(ValueError):
    """A request the server refuses: `status` 422 (invalid) or 413 (over a limit)."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


class Limits(BaseModel):
    """Per-request limits; anything over them is a 413 naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_items: int = 64  # items per /v1/score or /get_reward request
    max_responses: int = 16  # responses of one group item (`responses`)
    max_pairs: int = 32  # pairs per /v1/compare request
    max_images_per_item: int = 8
    max_image_bytes: int = 10 * 2**20  # decoded size of one image
    max_image_pixels: int = 4096 * 4096  # refused from the header, before decoding
    max_text_chars: int = 32_768  # per prompt, response or reference
    max_request_bytes: int = 64 * 2**20


_max_request_bytes: int | None = None  # set by the ingress replica, read by its body-size middleware


def set_max_request_bytes(limit: int) -> None:
    global _max_request_bytes
    _max_request_bytes = limit


def max_request_bytes() -> int | None:
    return _max_request_bytes


# A request's deadline: `X-Request-Timeout: <seconds>` (what the client will wait). A call whose deadline
# has passed when a member's batch would run it is dropped, not computed, and the request answers 504; a
# batch already running finishes. Set per request by the ingress's middleware.
TIMEOUT_HEADER = "X-Request-Timeout"
_deadline: ContextVar[float | None] = ContextVar("mrm_request_deadline", default=None)


def parse_timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadInput(f"headers.{TIMEOUT_HEADER}", f"{value!r} is not a positive number of seconds")
    return seconds


def set_deadline(seconds: float):
    """Start this request's clock (a token for `reset_deadline`)."""
    return _deadline.set(time.monotonic() + seconds)


def reset_deadline(token) -> None:
    _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until this request's deadline (<= 0: passed), or None without one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


# ------------------------------------------------------------------------------ requests
class ContentPart(BaseModel):
    """A chat content part: text, an image placeholder (filled from `images`), or an inline image."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "image", "image_url"]
    text: str | None = None
    image: str | None = None  # base64 or a data: URL
    image_url: str | dict[str, Any] | None = None  # OpenAI style: {"url": "data:image/png;base64,..."}


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[ContentPart]


class ScoreItem(BaseModel):
    """One prompt with one `response`, or a group: the same prompt with several `responses` (one result
    each, in order; the prompt and its images are encoded once for all of them)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Message]
    response: str | None = None
    responses: list[str] | None = Field(None, description="a group: several responses to this prompt")
    images: list[str] = Field(default_factory=list, description="base64 or data: URLs, one per image placeholder")
    reference: str | None = Field(None, description="reference answer for reward='hybrid'")

    def texts(self) -> list[str]:
        return [self.response] if self.responses is None else list(self.responses)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem] = Field(min_length=1)
    reward: Literal["model", "hybrid"] = "model"


class ComparePair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Message]
    chosen: str
    rejected: str
    images: list[str] = Field(default_factory=list)


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[ComparePair] = Field(min_length=1)


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward model request: full texts, their prompts, optional labels."""

    query: list[str] = Field(min_length=1)
    prompts: list[str]
    labels: list[str | None] | None = None


class PoolingRequest(BaseModel):
    """vLLM's `/classify` and `/pooling` request: chat-templated text `input` (one or a list), or one chat
    `messages` list whose last message is the assistant response (image_url parts with data: URLs). vLLM's
    other fields (truncate_prompt_tokens, priority, ...) are accepted and ignored, as vLLM itself does with
    fields it does not know."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    input: str | list[str] | None = None
    messages: list[Message] | None = None
    use_activation: bool | None = Field(None, description="false: the raw ensemble reward; default: its sigmoid")


# ----------------------------------------------------------------------------- responses
class ItemScore(BaseModel):
    reward: float = Field(description="the ensemble's reward (hybrid: 1 on a reference match, else sigmoid)")
    model_reward: float = Field(description="the ensemble's aggregated model reward")
    scores: dict[str, float] = Field(description="raw score of each member that scored this item")
    std: float = Field(description="disagreement: std across members, on the aggregate's scale")
    matched_reference: bool | None = None


class ScoreResponse(BaseModel):
    results: list[ItemScore]
    model_version: str
    members: dict[str, str]


class PairScore(BaseModel):
    prob_chosen: float = Field(description="sigmoid of the ensemble margin")
    margin: float
    margins: dict[str, float] = Field(description="each member's raw chosen-minus-rejected margin")
    std: float = Field(description="disagreement of the members' margins, on the aggregate's scale")


class CompareResponse(BaseModel):
    results: list[PairScore]
    model_version: str
    members: dict[str, str]


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


# ------------------------------------------------------------------- requests -> model inputs
def decode_image(value: str, *, field: str, limits: Limits) -> bytes:
    """Encoded image bytes from base64 or a data: URL, checked against the limits."""
    from mrm_ray.config import DataConfig
    from mrm_ray.model.images import BadImage, check_image

    if not isinstance(value, str):
        raise BadInput(field, "an image must be a base64 string or a data: URL")
    inline_only = ("images must be inline (base64 or data:image/...;base64,...); "
                   "the server never fetches URLs or reads paths")
    if _DATA_URL.match(value):
        value = value.split(",", 1)[1]
    elif value.startswith(("http://", "https://", "file:", "data:")):
        raise BadInput(field, inline_only)
    if len(value) > limits.max_image_bytes * 4 // 3 + 4:
        raise BadInput(field, f"image over {limits.max_image_bytes} bytes", status=413)
    try:  # a JPEG's base64 starts with "/9j/": a leading "/" is data here, and nothing is ever opened
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        path_like = value.startswith(("/", "./", "../", "~"))
        raise BadInput(field, inline_only if path_like else "not valid base64") from None
    config = DataConfig(max_image_pixels=limits.max_image_pixels, image_modes="convert")
    try:
        data, _, _ = check_image(data, config)
    except BadImage as exc:
        status = 413 if str(exc).startswith("image too large") else 422
        raise BadInput(field, str(exc), status=status) from None
    return data


def _check_text(text: str, field: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise BadInput(field, f"text of {len(text)} characters is over the limit of {limits.max_text_chars}",
                       status=413)


def prepare_prompt(prompt: str | list[Message], images: list[str], *, field: str,
                   limits: Limits) -> tuple[Any, list[bytes]]:
    """(prompt as text or plain chat messages with image placeholders, decoded images in order)."""
    inline = 0 if isinstance(prompt, str) else sum(
        isinstance(m.content, list) and sum(p.type != "text" and (p.image or p.image_url) is not None
                                            for p in m.content) for m in prompt)
    if inline + len(images) > limits.max_images_per_item:  # counted before any image is decoded
        raise BadInput(f"{field}.images", f"{inline + len(images)} images, over the limit of "
                                          f"{limits.max_images_per_item}", status=413)
    if isinstance(prompt, str):
        _check_text(prompt, f"{field}.prompt", limits)
        return prompt, [decode_image(v, field=f"{field}.images[{i}]", limits=limits) for i, v in enumerate(images)]
    pending = list(enumerate(images))
    messages, decoded = [], []
    for m, message in enumerate(prompt):
        where = f"{field}.prompt[{m}]"
        if isinstance(message.content, str):
            _check_text(message.content, f"{where}.content", limits)
            messages.append({"role": message.role, "content": message.content})
            continue
        parts = []
        for p, part in enumerate(message.content):
            at = f"{where}.content[{p}]"
            if part.type == "text":
                if part.text is None:
                    raise BadInput(f"{at}.text", "a text part needs 'text'")
                _check_text(part.text, f"{at}.text", limits)
                parts.append({"type": "text", "text": part.text})
                continue
            inline = part.image if part.image is not None else part.image_url
            if isinstance(inline, dict):
                inline = inline.get("url")
            if inline is None:  # a placeholder: the next entry of `images`
                if not pending:
                    raise BadInput(f"{field}.images", "fewer images than image placeholders in the prompt")
                i, inline = pending.pop(0)
                at = f"{field}.images[{i}]"
            decoded.append(decode_image(inline, field=at, limits=limits))
            parts.append({"type": "image"})
        messages.append({"role": message.role, "content": parts})
    if pending:
        raise BadInput(f"{field}.images", f"{len(pending)} image(s) have no image placeholder in the prompt")
    return messages, decoded


def _check_responses(item: ScoreItem, field: str, limits: Limits) -> None:
    if (item.response is None) == (item.responses is None):
        raise BadInput(f"{field}.response", "send `response` (one) or `responses` (a group), not both or neither")
    if item.response is not None:
        _check_text(item.response, f"{field}.response", limits)
        return
    if not item.responses:
        raise BadInput(f"{field}.responses", "a group needs at least one response")
    if len(item.responses) > limits.max_responses:
        raise BadInput(f"{field}.responses", f"{len(item.responses)} responses, over the limit of "
                                             f"{limits.max_responses}", status=413)
    for k, text in enumerate(item.responses):
        if not text.strip():
            raise BadInput(f"{field}.responses[{k}]", "an empty response")
        _check_text(text, f"{field}.responses[{k}]", limits)


def prepare_items(request: ScoreRequest, limits: Limits) -> list[dict]:
    """Member-ready groups `{prompt, images, responses}` (an item with one `response` is a group of
    one), or `BadInput` for the first bad field."""
    if len(request.items) > limits.max_items:
        raise BadInput("items", f"{len(request.items)} items, over the limit of {limits.max_items}", status=413)
    out = []
    for i, item in enumerate(request.items):
        _check_responses(item, f"items[{i}]", limits)
        prompt, images = prepare_prompt(item.prompt, item.images, field=f"items[{i}]", limits=limits)
        if item.reference is not None:
            _check_text(item.reference, f"items[{i}].reference", limits)
        out.append({"prompt": prompt, "images": images, "responses": item.texts()})
    return out


def prepare_pairs(request: CompareRequest, limits: Limits) -> list[dict]:
    if len(request.pairs) > limits.max_pairs:
        raise BadInput("pairs", f"{len(request.pairs)} pairs, over the limit of {limits.max_pairs}", status=413)
    out = []
    for i, pair in enumerate(request.pairs):
        prompt, images = prepare_prompt(pair.prompt, pair.images, field=f"pairs[{i}]", limits=limits)
        _check_text(pair.chosen, f"pairs[{i}].chosen", limits)
        _check_text(pair.rejected, f"pairs[{i}].rejected", limits)
        out.append({"prompt": prompt, "images": images, "chosen": pair.chosen, "rejected": pair.rejected})
    return out


def openrlhf_items(request: OpenRLHFRequest) -> ScoreRequest:
    """OpenRLHF sends prompt+response texts and the prompts. A chat-templated query (what OpenRLHF sends when
    its prompts use the chat template) is scored as the conversation it holds; a plain one's response is the
    query minus its prompt."""
    from mrm_ray.serve.chat_text import is_chat_text, split_chat_text

    if len(request.prompts) != len(request.query):
        raise BadInput("prompts", f"{len(request.prompts)} prompts for {len(request.query)} queries")
    if request.labels is not None and len(request.labels) != len(request.query):
        raise BadInput("labels", f"{len(request.labels)} labels for {len(request.query)} queries")
    items = []
    for i, (query, prompt) in enumerate(zip(request.query, request.prompts)):
        reference = request.labels[i] if request.labels is not None else None
        if is_chat_text(query):
            messages, response = split_chat_text(query, field=f"query[{i}]")
            items.append(ScoreItem(prompt=messages, response=response, reference=reference or None))
            continue
        if not query.startswith(prompt):
            raise BadInput(f"query[{i}]", f"does not start with prompts[{i}]; the response is the query "
                                          "minus its prompt prefix")
        items.append(ScoreItem(prompt=prompt, response=query[len(prompt):], reference=reference or None))
    return ScoreRequest(items=items)


def pooling_items(request: PoolingRequest) -> ScoreRequest:
    """The items of a vLLM-style request: each `input` text split into its conversation, or `messages`."""
    from mrm_ray.serve.chat_text import split_chat_text

    if (request.input is None) == (request.messages is None):
        raise BadInput("input", "send either `input` (chat-templated text) or `messages`, not both or neither")
    if request.messages is not None:
        if len(request.messages) < 2 or request.messages[-1].role != "assistant":
            raise BadInput("messages", "the last message must be the assistant response, after the prompt's")
        last = request.messages[-1].content
        if not isinstance(last, str) and any(p.type != "text" for p in last):
            raise BadInput("messages[-1].content", "the response is text only")
        response = last if isinstance(last, str) else "".join(p.text or "" for p in last)
        return ScoreRequest(items=[ScoreItem(prompt=request.messages[:-1], response=response)])
    texts = [request.input] if isinstance(request.input, str) else request.input
    if not texts:
        raise BadInput("input", "no inputs")
    field = "input" if isinstance(request.input, str) else "input[{}]"
    return ScoreRequest(items=[ScoreItem(prompt=prompt, response=response) for prompt, response in
                               (split_chat_text(t, field=field.format(i)) for i, t in enumerate(texts))])
