"""The protocols of the peers' own clients, as adapters onto `/v1/score`.

- OpenRLHF's remote reward model (`POST /get_reward`): `query` (prompt + response texts), `prompts`,
  optional `labels`; the answer carries `rewards`, `scores` and `extra_logs` (each member's score and the
  members' disagreement per query, which OpenRLHF logs).
- vLLM's pooling routes (`/classify`, `/pooling`, with their `/v1` spellings), as veRL's discriminative
  reward-model client and any client written for a vLLM reward server call them: chat-templated `input`
  text, or one chat `messages` list; one label, the ensemble's reward.

Chat-templated text is turned back into the conversation it was made from. OpenRLHF's `query` is the
decode of prompt + response tokens with the special tokens kept, and a vLLM `/classify` client sends
`input` the same way. Scored as a plain prompt that text would be wrapped in a second chat template;
instead it is split into its ChatML turns (`mrm_ray.chatml`) and the final assistant turn is the
response, so the same conversation sent as messages scores the same. Image placeholders
(`<|vision_start|>...<|vision_end|>`) in such text mark images whose pixels were not sent (the server
never fetches or opens anything), so that text is refused with how to send the images instead.
"""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel, ConfigDict, Field

from mrm_ray import chatml
from mrm_ray.rewards import sigmoid
from mrm_ray.serve.api import BadInput, Message, ScoreItem, ScoreRequest, ScoreResponse


# ------------------------------------------------------------------------------ requests
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


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]


# ------------------------------------------------------------------------------ chat-templated text
SEND_IMAGES = ("send the images themselves: POST /v1/score with items[].prompt as messages whose content has "
               "{\"type\": \"image\"} parts and items[].images as base64, or /classify with \"messages\" whose "
               "content has image_url parts (data: URLs)")

def split_chat_text(text: str, *, field: str) -> tuple[list[Message], str]:
    """(the messages before the final assistant turn, that turn's text) of ChatML text; BadInput otherwise."""
    images = len(chatml.VISION.findall(text))
    if images:
        raise BadInput(field, f"holds {images} image placeholder(s) but no images ({SEND_IMAGES})")
    try:
        turns = chatml.turns(text)
    except ValueError as exc:
        raise BadInput(field, str(exc)) from None
    if not turns or turns[-1][0] != "assistant":
        raise BadInput(field, "chat text must end with the assistant turn being scored (<|im_start|>assistant\\n...)")
    if len(turns) < 2:
        raise BadInput(field, "chat text has no prompt before the assistant turn")
    return [Message(role=role, content=content) for role, content in turns[:-1]], turns[-1][1]


# ------------------------------------------------------------------------------ requests -> /v1/score
def openrlhf_items(request: OpenRLHFRequest) -> ScoreRequest:
    """OpenRLHF sends prompt+response texts and the prompts. A chat-templated query (what OpenRLHF sends when
    its prompts use the chat template) is scored as the conversation it holds; a plain one's response is the
    query minus its prompt."""
    if len(request.prompts) != len(request.query):
        raise BadInput("prompts", f"{len(request.prompts)} prompts for {len(request.query)} queries")
    if request.labels is not None and len(request.labels) != len(request.query):
        raise BadInput("labels", f"{len(request.labels)} labels for {len(request.query)} queries")
    items = []
    for i, (query, prompt) in enumerate(zip(request.query, request.prompts)):
        reference = request.labels[i] if request.labels is not None else None
        if chatml.is_chatml(query):
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


# ------------------------------------------------------------------------------ /v1/score -> answers
def openrlhf_response(scored: ScoreResponse, members: list[str]) -> OpenRLHFResponse:
    """OpenRLHF's answer: the reward per query, and each member's score and the disagreement as `extra_logs`."""
    rewards = [r.reward for r in scored.results]
    logs = {"ensemble_std": [r.std for r in scored.results],
            **{f"score_{name}": [r.scores.get(name, float("nan")) for r in scored.results] for name in members}}
    return OpenRLHFResponse(rewards=rewards, scores=rewards, extra_logs=logs)


def pooling_response(scored: ScoreResponse, request: PoolingRequest, route: str) -> dict:
    """vLLM's `/classify` or `/pooling` answer: one label per input, the ensemble reward (its sigmoid unless
    `use_activation` is false)."""
    values = [r.model_reward if request.use_activation is False else sigmoid(r.model_reward) for r in scored.results]
    if route == "classify":
        data = [{"index": i, "label": "reward", "probs": [v], "num_classes": 1} for i, v in enumerate(values)]
    else:
        data = [{"index": i, "object": "pooling", "data": [v]} for i, v in enumerate(values)]
    return {"id": f"{'classify' if route == 'classify' else 'pool'}-{uuid.uuid4().hex}", "object": "list",
            "created": int(time.time()), "model": request.model or "reward-ensemble", "data": data,
            "usage": {"prompt_tokens": 0, "total_tokens": 0, "completion_tokens": 0, "prompt_tokens_details": None}}
