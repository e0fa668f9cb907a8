"""Chat-templated text sent to the server, back into the conversation it was made from.

OpenRLHF's `query` is the decode of prompt + response tokens with the special tokens kept, and a
client written for a vLLM `/classify` server sends `input` the same way. Scored as a plain prompt
that text would be wrapped in a second chat template; instead it is split into its ChatML turns
(`mrm_ray.chatml`) and the final assistant turn is the response. The same conversation sent as
messages scores the same.

Image placeholders (`<|vision_start|>...<|vision_end|>`) in such text mark images whose pixels
were not sent (the server never fetches or opens anything), so that text is refused with how
to send the images instead.
"""

from __future__ import annotations

from mrm_ray import chatml
from mrm_ray.serve.api import BadInput, Message

SEND_IMAGES = ("send the images themselves: POST /v1/score with items[].prompt as messages whose content has "
               "{\"type\": \"image\"} parts and items[].images as base64, or /classify with \"messages\" whose "
               "content has image_url parts (data: URLs)")

is_chat_text = chatml.is_chatml


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
