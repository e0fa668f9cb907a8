"""Load the Qwen2.5-VL processor (tokenizer + image processor + chat template) from a dir.

`AutoProcessor` also builds the video processor, which needs torchvision. Where torchvision
is missing (a CPU-only torch, as on our CI) we build the same processor class from the same
files without the video part, so images and text work identically and videos raise.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def _image_only_processor_class():
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2_5_VLProcessor without a video processor (no torchvision needed)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer,
                             chat_template=chat_template, **kwargs)

    return ImageOnlyQwen2_5_VLProcessor


def load_processor(path: str | os.PathLike, *, min_pixels: int | None = None,
                   max_pixels: int | None = None):
    """The checkpoint's processor; `min_pixels`/`max_pixels` override its image budget."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    # Qwen2.5-VL's preprocessor config carries min_pixels/max_pixels, which take precedence
    # over `size`, so the override goes through the same keys.
    size_kwargs = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
                   if v is not None}
    try:
        import torchvision  # noqa: F401

        return AutoProcessor.from_pretrained(path, **size_kwargs)
    except (ImportError, RuntimeError):
        logger.info("torchvision unavailable: loading %s without its video processor", path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path, **size_kwargs)
    cls = _image_only_processor_class()
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)
