"""Load a checkpoint's processor (tokenizer, chat template and, for vision families, images).

Vision-language families: the family's processor class (model/families.py). `AutoProcessor`
also builds the video processor, which needs torchvision; where torchvision is missing (a
CPU-only torch, as on our CI) the same class is built from the same files without the video
part, so images and text work identically and videos raise.

Text-only families: `TextProcessor`, the tokenizer behind the processor's interface, so the
encoder, the checks and the scorer call one thing whatever the family. It takes no images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from mrm_ray.model.inputs import TextOnly, is_image_part

logger = logging.getLogger(__name__)


class TextProcessor:
    """A text-only backbone's tokenizer with a processor's interface: chat messages whose content is a list of
    parts are rendered as text, and every token's `mm_token_type_ids` is 0."""

    image_processor = None

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.chat_template = tokenizer.chat_template

    @staticmethod
    def _text_messages(messages: Sequence[Mapping]) -> list[dict]:
        out = []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, str):
                parts = list(content or ())
                if any(is_image_part(p) or p.get("type") == "video" for p in parts):
                    raise TextOnly("a text-only model takes no images; route image items to a vision-language member")
                content = "".join(str(p.get("text", "")) for p in parts)
            out.append({**message, "content": content})
        return out

    def apply_chat_template(self, messages, **kwargs):
        return self.tokenizer.apply_chat_template(self._text_messages(messages), **kwargs)

    def __call__(self, text, images=None, return_tensors: str = "np", **kwargs):
        if images:
            raise TextOnly("a text-only model takes no images; route image items to a vision-language member")
        enc = self.tokenizer(text, add_special_tokens=False, return_tensors=return_tensors)
        enc["mm_token_type_ids"] = np.zeros_like(np.asarray(enc["input_ids"]))
        return enc

    def save_pretrained(self, out_dir) -> None:
        self.tokenizer.save_pretrained(out_dir)


def _image_only_processor_class(name: str):
    import transformers

    base = getattr(transformers, name)

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        base.__init__(self, image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                      **kwargs)

    # the processor without a video processor (no torchvision needed)
    return type(f"ImageOnly{name}", (base,), {"__init__": __init__})


def load_processor(path: str | os.PathLike, *, min_pixels: int | None = None,
                   max_pixels: int | None = None):
    """The checkpoint's processor; `min_pixels`/`max_pixels` override its image budget."""
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

    from mrm_ray.model.families import family_of

    family = family_of(AutoConfig.from_pretrained(path, trust_remote_code=False))
    if not family.vision:
        return TextProcessor(AutoTokenizer.from_pretrained(path, trust_remote_code=False))
    # The Qwen preprocessor configs carry min_pixels/max_pixels, which take precedence
    # over `size`, so the override goes through the same keys.
    size_kwargs = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
                   if v is not None}
    try:
        import torchvision  # noqa: F401

        return AutoProcessor.from_pretrained(path, trust_remote_code=False, **size_kwargs)
    except (ImportError, RuntimeError):
        logger.info("torchvision unavailable: loading %s without its video processor", path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    image_processor = AutoImageProcessor.from_pretrained(path, **size_kwargs)
    cls = _image_only_processor_class(family.processor)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)
