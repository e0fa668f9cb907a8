"""The one canonical preference-pair schema every reader produces.

    id        string        stable id (the dataset's own where it has one)
    source    string        the mixture source name it came from
    position  string        where in the source: "file:line" or "file:row"
    prompt    list<message> chat messages; content is a list of parts {type: text|image, text}
    images    list<binary>  encoded image bytes, one per image part, in order
    chosen    string        the preferred response's text
    rejected  string        the other response's text
    margin    double?       optional preference strength (subtracted in the BT loss)
    more_responses list<string>  a ranked record's further responses to the same prompt (else empty)
    scores    list<double>? a ranked record's score per response, [chosen, rejected, *more_responses]
    chosen_images, rejected_images  list<binary>  images inside a response (MMRB2's "thinking with
              images"), one per `<image>` mark in its text, in order (else empty)
    videos    list<list<binary>>  each video's frames (encoded images, in order), one per `video` part
              (else empty or null): the run's encoder gives them to the model by its route (model/inputs.py)

A ranked record (UltraFeedback-style: several scored responses to one prompt) keeps its best
response as `chosen` and its worst as `rejected`, so everything that reads pairs reads its
widest pair; training reads all its pairs (every two responses whose scores differ) with the
prompt encoded once (`ranked_pairs`).

Images stay encoded bytes until preprocessing. `canonical_pair` normalises what readers
find and raises `BadRecord` (with the reason) for missing or empty fields, a mismatch
between image parts and images, chosen identical to rejected, and a ranked record whose
responses are all identical (or that has no two different responses with different scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mrm_ray.data.quarantine import BadRecord
from mrm_ray.model.inputs import (IMAGE_MARKER, InvalidInput, as_messages, is_image_part, is_video_part, place_videos,
                                  response_text, video_frames)

PART = pa.struct([("type", pa.string()), ("text", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.list_(PART))])
PAIR_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("source", pa.string()),
    ("position", pa.string()),
    ("prompt", pa.list_(MESSAGE)),
    ("images", pa.list_(pa.binary())),
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("margin", pa.float64()),
    ("more_responses", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float64())),
    ("chosen_images", pa.list_(pa.binary())),
    ("rejected_images", pa.list_(pa.binary())),
    ("videos", pa.list_(pa.list_(pa.binary()))),
])
ROLES = ("system", "user", "assistant")


def _part(part: Any) -> dict:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise BadRecord(f"bad prompt part: expected text or a dict, got {type(part).__name__}")
    if is_image_part(part):
        return {"type": "image", "text": None}
    if is_video_part(part):
        return {"type": "video", "text": None}
    text = part.get("text")
    if text is None and "content" in part:
        text = response_text(part["content"])
    if not isinstance(text, str):
        raise BadRecord(f"bad prompt part: no text in {sorted(part)}")
    return {"type": "text", "text": text}


def normalize_prompt(prompt: Any, n_images: int) -> list[dict]:
    """Canonical chat messages (list content of {type, text} parts) for a prompt as the normaliser reads it
    (model/inputs.py: a string is a user turn with its images first, or where its `<image>` markers say). A
    multi-turn prompt keeps every turn (system, user, assistant; images in any user turn) and must not end
    with the assistant's."""
    if not isinstance(prompt, str):
        if not isinstance(prompt, Sequence) or not prompt:
            raise BadRecord("missing field: prompt")
        for message in prompt:
            if not isinstance(message, Mapping) or "content" not in message:
                raise BadRecord("bad prompt: each message needs role and content")
            if message.get("role", "user") not in ROLES:
                raise BadRecord(f"bad prompt: unknown role {message.get('role')!r}")
    messages = []
    for message in as_messages(prompt, n_images):  # InvalidInput when its image parts and the images disagree
        content = message["content"]
        parts = [_part(content)] if isinstance(content, str) else [_part(p) for p in content]
        messages.append({"role": message.get("role", "user"), "content": parts})
    if messages[-1]["role"] == "assistant":  # a multi-turn prompt: the responses answer its last (user) turn
        raise BadRecord(f"bad conversation: the prompt's last turn (of {len(messages)}) is the assistant's; the "
                        "responses answer the turn before them, so the prompt ends with that turn")
    return messages


def text_field(value: Any, field: str) -> str:
    if value is None:
        raise BadRecord(f"missing field: {field}")
    try:
        text = response_text(value)
    except (TypeError, ValueError) as exc:
        raise BadRecord(f"bad field: {field} ({exc})") from None
    if not text.strip():
        raise BadRecord(f"empty field: {field}")
    return text


def _ranking(texts: list[str], scores: Sequence[Any] | None) -> list[float] | None:
    if scores is None:
        if len(texts) > 2:
            raise BadRecord("bad record: more_responses need a score per response")
        return None
    if len(scores) != len(texts):
        raise BadRecord(f"bad field: scores has {len(scores)} values for {len(texts)} responses")
    try:
        values = [float(v) for v in scores]
    except (TypeError, ValueError):
        raise BadRecord(f"bad field: scores {list(scores)!r} are not all numbers") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise BadRecord("bad field: scores must be finite")
    if len({t.strip() for t in texts}) == 1:
        raise BadRecord(f"all {len(texts)} responses identical")
    if not ranked_pairs(texts, values):
        raise BadRecord("no preference: no two different responses have different scores")
    return values


def ranked_pairs(texts: Sequence[Any], scores: Sequence[float] | None) -> list[tuple[int, int]]:
    """(better, worse) response indices of every pair a record trains on: (0, 1) for a plain pair;
    for a ranked record every two responses whose scores differ. Responses with the same contents
    (texts, or token ids after truncation) never make a pair."""
    def same(a, b):
        return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) else a == b
    if not scores:
        return [] if same(texts[0], texts[1]) else [(0, 1)]
    return [(a, b) if scores[a] > scores[b] else (b, a) for a in range(len(texts)) for b in range(a + 1, len(texts))
            if scores[a] != scores[b] and not same(texts[a], texts[b])]


def canonical_pair(*, id: str, source: str, position: str, prompt: Any, chosen: Any, rejected: Any,
                   images: Sequence[bytes] = (), margin: float | None = None, more_responses: Sequence[Any] = (),
                   scores: Sequence[Any] | None = None, chosen_images: Sequence[bytes] = (),
                   rejected_images: Sequence[bytes] = (), videos: Sequence[Sequence[bytes]] = ()) -> dict:
    """A validated canonical row; raises `BadRecord` with the reason when it cannot be one.

    `videos` (each an ordered list of frames; a `{"type": "video"}` part where each goes, or before a text
    prompt) stay videos, so that the run's encoder chooses their route (model/inputs.py)."""
    if prompt is None or (isinstance(prompt, str) and not prompt.strip() and not images and not videos):
        raise BadRecord("missing field: prompt" if prompt is None else "empty field: prompt")
    if videos:
        try:
            videos = [video_frames(v) for v in videos]
            prompt, images, videos = place_videos(prompt, images, videos, frames=False)
        except InvalidInput as exc:
            raise BadRecord(exc.reason) from None
    messages = normalize_prompt(prompt, len(images))
    has_text = any(p["type"] == "text" and p["text"].strip() for m in messages for p in m["content"])
    if not has_text and not images and not videos:
        raise BadRecord("empty field: prompt")
    chosen_text, rejected_text = text_field(chosen, "chosen"), text_field(rejected, "rejected")
    more = [text_field(r, f"more_responses[{i}]") for i, r in enumerate(more_responses or ())]
    ranking = _ranking([chosen_text, rejected_text, *more], scores)
    for field, text, shown in (("chosen", chosen_text, chosen_images), ("rejected", rejected_text, rejected_images)):
        if shown and text.count(IMAGE_MARKER) != len(shown):
            raise BadRecord(f"image mismatch: {field} has {text.count(IMAGE_MARKER)} {IMAGE_MARKER} marks, "
                            f"{len(shown)} images")
    if (more or ranking) and (chosen_images or rejected_images):
        raise BadRecord("bad record: images inside responses are read for pairs only")
    if chosen_text.strip() == rejected_text.strip() and ranking is None and not (chosen_images or rejected_images):
        raise BadRecord("chosen identical to rejected")
    if margin is not None:
        try:
            margin = float(margin)
        except (TypeError, ValueError):
            raise BadRecord(f"bad field: margin {margin!r} is not a number") from None
    return {"id": str(id), "source": source, "position": position, "prompt": messages,
            "images": [bytes(b) for b in images], "chosen": chosen_text, "rejected": rejected_text,
            "margin": margin, "more_responses": more, "scores": ranking,
            "chosen_images": [bytes(b) for b in chosen_images], "rejected_images": [bytes(b) for b in rejected_images],
            "videos": [[bytes(f) for f in v] for v in videos]}


def to_chat_messages(prompt: list[dict]) -> list[dict]:
    """Canonical prompt -> messages the chat template renders (image parts as {"type": "image"}, video parts as
    {"type": "video"})."""
    return [{"role": m["role"], "content": [{"type": p["type"]} if p["type"] in ("image", "video") else
                                            {"type": "text", "text": p["text"]} for p in m["content"]]}
            for m in prompt]
