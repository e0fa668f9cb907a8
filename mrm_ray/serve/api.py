"""The HTTP API: request and response models, and turning a request into member inputs under its limits.

Everything a client sends is checked here, in the ingress, before any member sees it, so a
bad item costs one 4xx naming its field and never a member's batch. Images are accepted
only inline (base64 or `data:` URLs, read by the one input normaliser with no image root): the
server never opens a path or fetches a URL. The limits are config/serve.py's `Limits`; the
OpenRLHF and vLLM request forms are serve/protocols.py's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mrm_ray.config import METHODS, Limits

Role = Literal["system", "user", "assistant"]


class BadInput(ValueError):
    """A request the server refuses: `status` 422 (invalid) or 413 (over a limit)."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


# ------------------------------------------------------------------------------ requests
class ContentPart(BaseModel):
    """A chat content part: text, an image placeholder (filled from `images`), or an inline image."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "image", "image_url", "video"]  # video: a placeholder, filled from `videos`
    text: str | None = None
    image: str | None = None  # base64 or a data: URL
    image_url: str | dict[str, Any] | None = None  # OpenAI style: {"url": "data:image/png;base64,..."}


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[ContentPart]


class ScoreItem(BaseModel):
    """One prompt with one `response`, or a group: the same prompt with several `responses` (one result
    each, in order; the prompt and its images are encoded once for all of them). A prompt may be a whole
    conversation (system, user and assistant turns, images in any user turn); one that ends with the
    assistant's turn, sent without `response`, scores that last turn given everything before it."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Message]
    response: str | None = None
    responses: list[str] | None = Field(None, description="a group: several responses to this prompt")
    images: list[str] = Field(default_factory=list, description="base64 or data: URLs, one per image placeholder")
    videos: list[list[str]] = Field(default_factory=list, description="each an ordered list of frames (base64 or "
                                    "data: URLs, one size), one per video placeholder or before a string prompt's "
                                    "text")
    reference: str | None = Field(None, description="reference answer for reward='hybrid'")

    def texts(self) -> list[str]:
        return [self.response] if self.responses is None else list(self.responses)


class Aggregation(BaseModel):
    """How a request's member scores are combined; unset = the ensemble's own (its `ensemble.yaml` or Serve
    config)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal[METHODS] | None = Field(None, description="mean, z_mean, accuracy_weighted, "
                                            "confidence_weighted, or the conservative min, uwo, lcb")
    uncertainty_coef: float | None = Field(None, ge=0, allow_inf_nan=False,
                                           description="uwo: mean - coef x variance; lcb: mean - coef x std")


class ScoreRequest(Aggregation):
    items: list[ScoreItem] = Field(min_length=1)
    reward: Literal["model", "hybrid"] = "model"


class ComparePair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | list[Message]
    chosen: str
    rejected: str
    images: list[str] = Field(default_factory=list)
    videos: list[list[str]] = Field(default_factory=list, description="each an ordered list of frames")


class CompareRequest(Aggregation):
    pairs: list[ComparePair] = Field(min_length=1)


# ----------------------------------------------------------------------------- responses
class ItemScore(BaseModel):
    reward: float = Field(description="the ensemble's reward (hybrid: 1 on a reference match, else sigmoid)")
    model_reward: float = Field(description="the ensemble's aggregated model reward")
    scores: dict[str, float] = Field(description="raw score of each member that scored this item")
    std: float = Field(description="disagreement: std across members, on the aggregate's scale")
    method: str = Field(description="the aggregation that made model_reward")
    matched_reference: bool | None = None
    unscored: dict[str, str] = Field(default_factory=dict, description="members routed this item that gave it "
                                     "no score, and why (a judge's critique that timed out)")


class ScoreResponse(BaseModel):
    results: list[ItemScore]
    model_version: str
    members: dict[str, str]
    uncertainty_coef: float = Field(description="the coefficient uwo / lcb used")


class PairScore(BaseModel):
    prob_chosen: float = Field(description="sigmoid of the ensemble margin")
    margin: float
    margins: dict[str, float] = Field(description="each member's raw chosen-minus-rejected margin")
    std: float = Field(description="disagreement of the members' margins, on the aggregate's scale")
    method: str = Field(description="the aggregation that made margin")
    unscored: dict[str, str] = Field(default_factory=dict, description="members routed this pair that gave it "
                                     "no score, and why")


class CompareResponse(BaseModel):
    results: list[PairScore]
    model_version: str
    members: dict[str, str]
    uncertainty_coef: float = Field(description="the coefficient uwo / lcb used")


# ------------------------------------------------------------------- requests -> model inputs
def decode_image(value: str, *, field: str, limits: Limits) -> bytes:
    """Encoded image bytes from base64 or a data: URL (the normaliser's rule with no image root: no path is read,
    no URL fetched), checked against the limits."""
    from mrm_ray.config import DataConfig
    from mrm_ray.model.images import BadImage, check_image
    from mrm_ray.model.inputs import InvalidInput, image_bytes

    if not isinstance(value, str):
        raise BadInput(field, "an image must be a base64 string or a data: URL")
    if len(value) > limits.max_image_bytes * 4 // 3 + 64:
        raise BadInput(field, f"image over {limits.max_image_bytes} bytes", status=413)
    try:  # a JPEG's base64 starts with "/9j/": a leading "/" is data here, and nothing is ever opened
        data = image_bytes(value)
    except InvalidInput as exc:
        raise BadInput(field, exc.reason) from None
    if len(data) > limits.max_image_bytes:
        raise BadInput(field, f"image over {limits.max_image_bytes} bytes", status=413)
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


def prepare_videos(videos: list[list[str]], *, field: str, limits: Limits) -> list[list[bytes]]:
    """Each video's frames decoded and checked (model/inputs.py's `video_frames`: some, not too many, one size)."""
    from mrm_ray.model.inputs import InvalidInput, video_frames

    if len(videos) > limits.max_videos_per_item:
        raise BadInput(f"{field}.videos", f"{len(videos)} videos, over the limit of {limits.max_videos_per_item}",
                       status=413)
    out = []
    for v, frames in enumerate(videos):
        if len(frames) > limits.max_video_frames:
            raise BadInput(f"{field}.videos[{v}]", f"{len(frames)} frames, over the limit of "
                                                  f"{limits.max_video_frames}", status=413)
        decoded = [decode_image(f, field=f"{field}.videos[{v}][{k}]", limits=limits) for k, f in enumerate(frames)]
        try:
            out.append(video_frames(decoded, max_frames=limits.max_video_frames))
        except InvalidInput as exc:
            raise BadInput(f"{field}.videos[{v}]", exc.reason) from None
    return out


def prepare_media(prompt: str | list[Message], images: list[str], videos: list[list[str]], *, field: str,
                  limits: Limits) -> dict[str, Any]:
    """`{prompt, images, videos?}` for the members: each video (its frames, decoded and checked, in order) where
    its part is; each member's encoder gives it to its model by the member's route (model/inputs.py)."""
    from mrm_ray.model.inputs import InvalidInput, place_videos

    messages, decoded = prepare_prompt(prompt, images, field=field, limits=limits)
    frames = prepare_videos(videos, field=field, limits=limits)
    try:
        messages, decoded, frames = place_videos(messages, decoded, frames, frames=False)
    except InvalidInput as exc:
        raise BadInput(f"{field}.videos", exc.reason) from None
    return {"prompt": messages, "images": decoded, **({"videos": frames} if frames else {})}


def prepare_prompt(prompt: str | list[Message], images: list[str], *, field: str,
                   limits: Limits) -> tuple[Any, list[bytes]]:
    """(prompt as text or plain chat messages with image (and video) placeholders, decoded images in order)."""
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
            if part.type == "video":  # filled from `videos` (prepare_media)
                parts.append({"type": "video"})
                continue
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


def split_conversation(item: ScoreItem, field: str) -> None:
    """A conversation sent whole (its last turn the assistant's, no `response`): that turn becomes the response
    scored, the turns before it the prompt. A conversation that ends with the assistant's turn and has a
    response too, or one that has no response and does not end with the assistant's turn, is refused."""
    if isinstance(item.prompt, str):
        return
    last = len(item.prompt) - 1
    given = item.response is not None or item.responses is not None
    if item.prompt and item.prompt[-1].role == "assistant":
        if given:
            raise BadInput(f"{field}.prompt[{last}]", "the conversation ends with an assistant turn and a response "
                                                      "is sent too: leave out `response` to score that turn, or end "
                                                      "the prompt with the turn the response answers")
        content = item.prompt[-1].content
        if not isinstance(content, str) and any(p.type != "text" for p in content):
            raise BadInput(f"{field}.prompt[{last}].content", "the assistant turn scored is text only")
        item.response = content if isinstance(content, str) else "".join(p.text or "" for p in content)
        item.prompt = item.prompt[:-1]
        if not item.prompt:
            raise BadInput(f"{field}.prompt", "the conversation has no turn before the assistant turn scored")
    elif not given:
        raise BadInput(f"{field}.prompt[{last}]", f"the conversation's last turn is the {item.prompt[-1].role}'s, "
                                                  "not the assistant's: end it with the assistant turn to score, "
                                                  "or send `response`")


def _check_responses(item: ScoreItem, field: str, limits: Limits) -> None:
    if (item.response is None) == (item.responses is None):
        raise BadInput(f"{field}.response", "send `response` (one) or `responses` (a group), not both or neither; "
                                            "or send the conversation ending with the assistant turn to score")
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
    """Member-ready groups `{prompt, images, videos, responses}` (an item with one `response` is a group of
    one), or `BadInput` for the first bad field."""
    if len(request.items) > limits.max_items:
        raise BadInput("items", f"{len(request.items)} items, over the limit of {limits.max_items}", status=413)
    out = []
    for i, item in enumerate(request.items):
        split_conversation(item, f"items[{i}]")
        _check_responses(item, f"items[{i}]", limits)
        media = prepare_media(item.prompt, item.images, item.videos, field=f"items[{i}]", limits=limits)
        if item.reference is not None:
            _check_text(item.reference, f"items[{i}].reference", limits)
        out.append({**media, "responses": item.texts()})
    return out


def prepare_pairs(request: CompareRequest, limits: Limits) -> list[dict]:
    if len(request.pairs) > limits.max_pairs:
        raise BadInput("pairs", f"{len(request.pairs)} pairs, over the limit of {limits.max_pairs}", status=413)
    out = []
    for i, pair in enumerate(request.pairs):
        if not isinstance(pair.prompt, str) and pair.prompt and pair.prompt[-1].role == "assistant":
            raise BadInput(f"pairs[{i}].prompt[{len(pair.prompt) - 1}]", "the conversation ends with an assistant "
                                                                       "turn: chosen and rejected answer the turn "
                                                                       "before them, so end it with that turn")
        media = prepare_media(pair.prompt, pair.images, pair.videos, field=f"pairs[{i}]", limits=limits)
        _check_text(pair.chosen, f"pairs[{i}].chosen", limits)
        _check_text(pair.rejected, f"pairs[{i}].rejected", limits)
        out.append({**media, "chosen": pair.chosen, "rejected": pair.rejected})
    return out


def count_responses(items) -> int:
    """Responses in a score request's items (a group item holds several)."""
    return sum(len(item.texts()) for item in items)
