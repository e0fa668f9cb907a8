"""The published architectures of each family as real config objects, with no download.

The memory plan counts parameters by building these configs' modules on the meta device
(shapes only), and `published_config_dir` writes a `config.json` that `model.random_init`
builds a full-size model from (random weights): enough to measure memory and speed of a run
before (or without) its checkpoint. Each entry also carries the total its model card states,
which the tests compare with the module's count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mrm_ray.atomic import atomic_file
from mrm_ray.model.families import family_named


@dataclass(frozen=True)
class Published:
    family: str
    text: dict  # text decoder fields of config.json
    vision: dict = field(default_factory=dict)  # vision tower fields
    billions: float = 0.0  # the model card's total (LM head included); with `nominal`, the size in the name
    top: dict = field(default_factory=dict)  # top-level fields (token ids)
    nominal: bool = False


_QWEN2_5_VL_TOKENS = dict(bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
                          vision_end_token_id=151653, vision_token_id=151654, image_token_id=151655,
                          video_token_id=151656)
_QWEN3_VL_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                        vision_end_token_id=151653)
_QWEN3_5_TOKENS = dict(image_token_id=248056, video_token_id=248057, vision_start_token_id=248053,
                       vision_end_token_id=248054)


def _qwen2_5_vl(hidden, layers, intermediate, heads, kv_heads, vocab, tied, billions) -> Published:
    """Qwen/Qwen2.5-VL-*-Instruct: the same 32-block windowed ViT in every size."""
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, hidden_act="silu",
                max_position_embeddings=128000, rms_norm_eps=1e-6, rope_theta=1000000.0,
                rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24]},
                attention_dropout=0.0, use_sliding_window=False, sliding_window=32768, max_window_layers=70,
                initializer_range=0.02, tie_word_embeddings=tied, model_type="qwen2_5_vl_text", **_QWEN2_5_VL_TOKENS)
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu")
    return Published("qwen2_5_vl", text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN2_5_VL_TOKENS))


def _qwen3_vl(hidden, layers, intermediate, heads, kv_heads, tied, vision_depth, vision_hidden, vision_intermediate,
              deepstack, billions) -> Published:
    """Qwen/Qwen3-VL-*-Instruct (dense): interleaved M-RoPE, DeepStack features at three LM layers."""
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=128, vocab_size=151936,
                hidden_act="silu", max_position_embeddings=262144, rms_norm_eps=1e-6, attention_bias=False,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True},
                tie_word_embeddings=tied, bos_token_id=151643, eos_token_id=151645)
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate, num_heads=16,
                  in_channels=3, out_hidden_size=hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                  num_position_embeddings=2304, deepstack_visual_indexes=deepstack, hidden_act="gelu_pytorch_tanh")
    return Published("qwen3_vl", text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN3_VL_TOKENS))


def _qwen3_5(hidden, layers, intermediate, heads, kv_heads, value_heads, tied, vision_depth, vision_hidden,
             vision_intermediate, vision_heads, billions) -> Published:
    """Qwen/Qwen3.5-*: three Gated DeltaNet layers to one gated full-attention layer, partial M-RoPE."""
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=256, vocab_size=248320,
                hidden_act="silu", max_position_embeddings=262144, rms_norm_eps=1e-6, linear_conv_kernel_dim=4,
                linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16,
                linear_num_value_heads=value_heads, full_attention_interval=4,
                rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                                 "mrope_section": [11, 11, 10], "mrope_interleaved": True},
                tie_word_embeddings=tied, eos_token_id=248044)
    vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                  num_heads=vision_heads, in_channels=3, out_hidden_size=hidden, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, num_position_embeddings=2304, hidden_act="gelu_pytorch_tanh")
    return Published("qwen3_5", text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN3_5_TOKENS),
                     nominal=True)


PUBLISHED: dict[str, Published] = {
    # Qwen/Qwen2.5-VL-*-Instruct config.json; totals from the model cards
    "qwen2_5_vl_3b": _qwen2_5_vl(2048, 36, 11008, 16, 2, 151936, True, 3.75),
    "qwen2_5_vl_7b": _qwen2_5_vl(3584, 28, 18944, 28, 4, 152064, False, 8.29),
    "qwen2_5_vl_32b": _qwen2_5_vl(5120, 64, 27648, 40, 8, 152064, False, 33.45),
    "qwen2_5_vl_72b": _qwen2_5_vl(8192, 80, 29568, 64, 8, 152064, False, 73.41),
    # Qwen/Qwen3-VL-*-Instruct config.json
    "qwen3_vl_2b": _qwen3_vl(2048, 28, 6144, 16, 8, True, 24, 1024, 4096, [5, 11, 17], 2.13),
    "qwen3_vl_4b": _qwen3_vl(2560, 36, 9728, 32, 8, True, 24, 1024, 4096, [5, 11, 17], 4.44),
    "qwen3_vl_8b": _qwen3_vl(4096, 36, 12288, 32, 8, False, 27, 1152, 4304, [8, 16, 24], 8.77),
    "qwen3_vl_32b": _qwen3_vl(5120, 64, 25600, 64, 8, False, 27, 1152, 4304, [8, 16, 24], 33.4),
    # Qwen/Qwen3.5-* config.json (dense sizes whose vision towers were seen in the published configs; the
    # multi-token-prediction layer the checkpoints also ship is not part of the model transformers builds)
    "qwen3_5_9b": _qwen3_5(4096, 32, 12288, 16, 4, 32, False, 27, 1152, 4304, 16, 9.0),
    "qwen3_5_27b": _qwen3_5(5120, 64, 17408, 24, 4, 48, False, 27, 1152, 4304, 16, 27.0),
}


def published_config_dict(name: str) -> dict:
    """The architecture fields of the published `config.json`."""
    if name not in PUBLISHED:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(PUBLISHED)}")
    p = PUBLISHED[name]
    family = family_named(p.family)
    return {"architectures": [family.generator], "model_type": family.model_types[0],
            "text_config": dict(p.text), "vision_config": dict(p.vision), "torch_dtype": "bfloat16", **p.top}


def published_config(name: str):
    """The family's config object of the published architecture."""
    data = published_config_dict(name)
    return family_named(PUBLISHED[name].family).transformers_class("config")(**data)


def published_config_dir(name: str, out: str | Path) -> Path:
    """Write `out/config.json` for the published architecture (for `model.random_init`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "config.json", "w") as f:
        json.dump(published_config(name).to_dict(), f, indent=2, sort_keys=True)
    return out
