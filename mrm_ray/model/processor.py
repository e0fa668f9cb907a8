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

    size_kwargs = {}
    if min_pixels is not None or max_pixels is not None:
        ip = AutoImageProcessor.from_pretrained(path)
        size = dict(ip.size.items()) if hasattr(ip.size, "items") else {}
        size = {k: v for k, v in size.items() if k in ("shortest_edge", "longest_edge") and v}
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        size_kwargs = {"size": size}
    try:
        import torchvision  # noqa: F401

        return AutoProcessor.from_pretrained(path, **size_kwargs)
    except (ImportError, RuntimeError):
        logger.info("torchvision unavailable: loading %s without its video processor", path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path, **size_kwargs)
    cls = _image_only_processor_class()
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)
