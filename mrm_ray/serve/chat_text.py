"""Chat-templated text back into the conversation it was made from.

RL stacks that build prompts with the policy's chat template send text, not messages: OpenRLHF's
`query` is the decode of prompt + response tokens with the special tokens kept, and a client
written for a vLLM `/classify` server sends `input` the same way. Scored as a plain prompt that
text would be wrapped in a second chat template; instead it is split into its turns (ChatML,
`<|im_start|>ROLE\\n...<|im_end|>`, the template of every Qwen family) and the final assistant
turn is the response. The same conversation sent as messages scores the same.

Image placeholders (`<|vision_start|>...<|vision_end|>`) in such text mark images whose pixels
were not sent (the server never fetches or opens anything), so that text is refused with how
to send the images instead.
"""

from __future__ import annotations

import re

from mrm_ray.serve.api import BadInput, Message

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)(?:<\|im_end\|>\n?|(?=<\|im_start\|>)|$)", re.S)
_IMAGE = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>", re.S)
_TRAILING = ("<|endoftext|>", IM_END)
SEND_IMAGES = ("send the images themselves: POST /v1/score with items[].prompt as messages whose content has "
               "{\"type\": \"image\"} parts and items[].images as base64, or /classify with \"messages\" whose "
               "content has image_url parts (data: URLs)")


def is_chat_text(text: str) -> bool:
    return text.lstrip().startswith(IM_START)


def split_chat_text(text: str, *, field: str) -> tuple[list[Message], str]:
    """(the messages before the final assistant turn, that turn's text) of ChatML text; BadInput otherwise."""
    images = len(_IMAGE.findall(text))
    if images:
        raise BadInput(field, f"holds {images} image placeholder(s) but no images ({SEND_IMAGES})")
    body = text.strip()
    for token in _TRAILING:  # the response's own end of turn (and end of text), as decoded
        body = body.removesuffix(token).rstrip()
    turns, at = [], 0
    for match in _TURN.finditer(body):
        if body[at:match.start()].strip():
            raise BadInput(field, f"text outside a chat turn at character {at}: {body[at:match.start()][:40]!r}")
        turns.append((match.group(1), match.group(2)))
        at = match.end()
    if body[at:].strip():
        raise BadInput(field, f"text outside a chat turn at character {at}: {body[at:][:40]!r}")
    if not turns or turns[-1][0] != "assistant":
        raise BadInput(field, "chat text must end with the assistant turn being scored (<|im_start|>assistant\\n...)")
    if len(turns) < 2:
        raise BadInput(field, "chat text has no prompt before the assistant turn")
    return [Message(role=role, content=content) for role, content in turns[:-1]], turns[-1][1]
