"""ChatML text (`<|im_start|>ROLE\\n...<|im_end|>`, the chat template of every Qwen family) back into turns.

RL stacks that build prompts with the policy's chat template pass text, not messages. Both sides of the
endpoint need the conversation back: the server to score such text as the conversation it holds, the RL
adapters to send a templated prompt as messages. Pure functions; errors are `ValueError`s.
"""

from __future__ import annotations

import re

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_TURN = re.compile(r"<\|im_start\|>(system|user|assistant)(?:\n|$)(.*?)(?:<\|im_end\|>\n?|(?=<\|im_start\|>)|$)",
                   re.S)
# a vision placeholder: before the processor expands it one pad token, after it one per image token
VISION = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>", re.S)
_IMAGE = re.compile(r"<\|vision_start\|>(?:<\|image_pad\|>)+<\|vision_end\|>")
_TRAILING = ("<|endoftext|>", IM_END)


def is_chatml(text: str) -> bool:
    return text.lstrip().startswith(IM_START)


def turns(text: str) -> list[tuple[str, str]]:
    """(role, content) of each turn, the last one's end of turn (and end of text) optional."""
    body = text.strip()
    for token in _TRAILING:  # a response's own end of turn, as decoded
        body = body.removesuffix(token).rstrip()
    out, at = [], 0
    for match in _TURN.finditer(body):
        if body[at:match.start()].strip():
            raise ValueError(f"text outside a chat turn at character {at}: {body[at:match.start()][:40]!r}")
        out.append((match.group(1), match.group(2)))
        at = match.end()
    if body[at:].strip():
        raise ValueError(f"text outside a chat turn at character {at}: {body[at:][:40]!r}")
    return out


def image_parts(content: str) -> str | list[dict]:
    """A turn's content with each image placeholder as an `{"type": "image"}` part (unchanged without one);
    a video placeholder is a ValueError."""
    if not VISION.search(content):
        return content
    parts, at = [], 0
    for match in VISION.finditer(content):
        if not _IMAGE.fullmatch(match.group()):
            raise ValueError(f"only image placeholders are supported, not {match.group()[:60]!r}")
        if content[at:match.start()]:
            parts.append({"type": "text", "text": content[at:match.start()]})
        parts.append({"type": "image"})
        at = match.end()
    if content[at:]:
        parts.append({"type": "text", "text": content[at:]})
    return parts
