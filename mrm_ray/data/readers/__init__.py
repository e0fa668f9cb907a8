"""One reader per published preference format, each yielding canonical pair dicts."""

from __future__ import annotations

from collections.abc import Callable

from mrm_ray.data.readers.benchmarks import (read_mm_rlhf_rewardbench, read_mmrb2, read_multimodal_rewardbench,
                                             read_vl_rewardbench)
from mrm_ray.data.readers.canonical import read_canonical
from mrm_ray.data.readers.chat_messages import read_chat_messages
from mrm_ray.data.readers.hf import read_hf_rlaif_v, read_hf_ultrafeedback_binarized
from mrm_ray.data.readers.sharegpt import read_sharegpt
from mrm_ray.data.readers.trl import read_trl
from mrm_ray.data.readers.ultrafeedback import read_ultrafeedback_ultra_hard

READERS: dict[str, Callable] = {
    "chat_messages": read_chat_messages,
    "sharegpt": read_sharegpt,
    "trl": read_trl,
    "mm_rlhf_rewardbench": read_mm_rlhf_rewardbench,
    "vl_rewardbench": read_vl_rewardbench,
    "multimodal_rewardbench": read_multimodal_rewardbench,
    "mmrb2": read_mmrb2,
    "hf_rlaif_v": read_hf_rlaif_v,
    "hf_ultrafeedback_binarized": read_hf_ultrafeedback_binarized,
    "ultrafeedback_ultra_hard": read_ultrafeedback_ultra_hard,
    "canonical": read_canonical,
}


def get_reader(name: str) -> Callable:
    """The reader for a mixture source's `format` name; a typo lists the known names."""
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown reader {name!r}; known readers: {', '.join(sorted(READERS))}") from None
