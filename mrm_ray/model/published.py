"""Qwen2.5-VL's published architectures as real config objects, with no download.

The memory plan counts parameters from these dimensions, and `published_config_dir` writes
a `config.json` that `model.random_init` builds a full-size model from (random weights):
enough to measure memory and speed of a 3B..72B run before any checkpoint is at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from mrm_ray.atomic import atomic_file

# Text decoder of each published model (Qwen/Qwen2.5-VL-*-Instruct config.json).
PUBLISHED = {
    "qwen2_5_vl_3b": dict(hidden=2048, layers=36, intermediate=11008, heads=16, kv_heads=2, vocab=151936, tied=True),
    "qwen2_5_vl_7b": dict(hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4, vocab=152064, tied=False),
    "qwen2_5_vl_32b": dict(hidden=5120, layers=64, intermediate=27648, heads=40, kv_heads=8, vocab=152064,
                           tied=False),
    "qwen2_5_vl_72b": dict(hidden=8192, layers=80, intermediate=29568, heads=64, kv_heads=8, vocab=152064,
                           tied=False),
}
# The vision tower: the same 32-block windowed ViT in every size.
VISION = dict(hidden=1280, layers=32, intermediate=3420, heads=16, patch=14, temporal_patch=2, merge=2,
              window=112, fullatt_blocks=[7, 15, 23, 31])
TOKEN_IDS = dict(bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652, vision_end_token_id=151653,
                 vision_token_id=151654, image_token_id=151655, video_token_id=151656)


def published_config_dict(name: str) -> dict:
    """The `config.json` of Qwen2.5-VL-{3B,7B,32B,72B}-Instruct (architecture fields)."""
    if name not in PUBLISHED:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(PUBLISHED)}")
    t, v = PUBLISHED[name], VISION
    text = dict(hidden_size=t["hidden"], intermediate_size=t["intermediate"], num_hidden_layers=t["layers"],
                num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"], vocab_size=t["vocab"],
                hidden_act="silu", max_position_embeddings=128000, rms_norm_eps=1e-6, rope_theta=1000000.0,
                rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24]},
                attention_dropout=0.0, use_sliding_window=False, sliding_window=32768, max_window_layers=70,
                initializer_range=0.02, tie_word_embeddings=t["tied"], **TOKEN_IDS)
    vision = dict(depth=v["layers"], hidden_size=v["hidden"], intermediate_size=v["intermediate"],
                  num_heads=v["heads"], in_chans=3, out_hidden_size=t["hidden"], patch_size=v["patch"],
                  spatial_merge_size=v["merge"], temporal_patch_size=v["temporal_patch"], window_size=v["window"],
                  fullatt_block_indexes=v["fullatt_blocks"], tokens_per_second=2, hidden_act="silu")
    return {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            "text_config": {"model_type": "qwen2_5_vl_text", **text}, "vision_config": vision,
            "tie_word_embeddings": t["tied"], "torch_dtype": "bfloat16", **TOKEN_IDS}


def published_config(name: str):
    """A `Qwen2_5_VLConfig` of the published architecture."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(**published_config_dict(name))


def published_config_dir(name: str, out: str | Path) -> Path:
    """Write `out/config.json` for the published architecture (for `model.random_init`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "config.json", "w") as f:
        json.dump(published_config(name).to_dict(), f, indent=2, sort_keys=True)
    return out
