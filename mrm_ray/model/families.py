"""The backbone families a reward model can be built on: one entry each, and nothing else branches on them.

A family's entry holds everything that differs between families: which transformers classes
hold its backbone, checkpoints and processor; whether it sees images (M-RoPE over (temporal,
height, width) for the vision-language families, one axis for the text-only LMs); whether the
shared-prompt packing is exact for it; its published checkpoint layout; the modules LoRA adapts;
its chat template (model/templates/); the tiny random checkpoint of it that tests and demos build
(model/tiny.py); and its published architectures (model/published.py). Adding a family is its
entry here, its template, and its tests.

Qwen3.5 interleaves Gated DeltaNet (linear attention) layers with full attention. A linear
layer carries a recurrent state along the sequence, so a second response packed after the
first would start from the first response's state, not the prompt's: the packed layout is
not exact there, and Qwen3.5 runs the two-sequence layout (each response in its own row with
its own copy of the prompt). Carrying the prompt's state into each response would need every
linear layer to start each response from the prompt's recurrent and convolution states, which
transformers' layer takes only as a generation cache for one sequence; it would mean
re-implementing the layer, so it was not done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------ the entry
@dataclass(frozen=True)
class TinySpec:
    """A tiny random checkpoint of the family (model/tiny.py): its added tokens, pre-tokenizer, image settings,
    and `config(ids, text_hidden, vision_hidden, text_layers)`: the config class's keyword arguments."""

    tokens: tuple[str, ...]  # added tokens, after the trained vocabulary (in this order)
    config: Callable[..., dict]
    split: str = "qwen2"  # pre-tokenizer pattern: qwen2 (Qwen2's tokenizer) | qwen3_5 (Qwen3.5's)
    patch_size: int = 14  # vision families: the image processor's patch (16 from Qwen3-VL on)
    mean_std: str = "clip"  # clip (Qwen2/2.5-VL) or half (0.5, 0.5: Qwen3-VL, Qwen3.5)


@dataclass(frozen=True)
class Published:
    """One published architecture: config.json's text and vision fields, and its model card's total."""

    text: dict  # text decoder fields of config.json
    vision: dict = field(default_factory=dict)  # vision tower fields
    billions: float = 0.0  # the model card's total (LM head included); with `nominal`, the size in the name
    top: dict = field(default_factory=dict)  # top-level fields (token ids)
    nominal: bool = False


@dataclass(frozen=True)
class Family:
    name: str  # what `mrm-ray tiny --family`, `tiny:FAMILY` and presets call it
    model_types: tuple[str, ...]  # config.json `model_type` values it covers
    backbone: str  # transformers class of the base model (no LM head)
    generator: str  # transformers class published checkpoints are saved as
    config: str  # transformers config class
    vision: bool  # takes images (pixel_values, image_grid_thw, M-RoPE)
    template: str = ""  # its published chat template: model/templates/<template>.jinja
    processor: str | None = None  # transformers processor class (vision families)
    seq_cls: str = ""  # the `*ForSequenceClassification` architecture name (transformers' or vLLM's)
    shares_prompt: bool = True  # packed groups (one prompt, many responses) are exact
    # backbone module prefix -> the prefix its published checkpoints store it under (Qwen2-VL and Qwen2.5-VL keep
    # their original layout: the vision tower at the top, the decoder under `model.`)
    saved_prefixes: tuple[tuple[str, str], ...] = (("", "model."),)
    lora_scope: str = r".*language_model.*\."  # where LoRA adapts `train.lora.target_modules`: the language model
    tiny: TinySpec | None = None  # None: no tiny checkpoint of it yet
    published: Mapping[str, Published] = field(default_factory=dict)  # preset name -> architecture

    def saved_name(self, key: str) -> str:
        """A backbone parameter's name in the family's published checkpoint layout."""
        for inside, saved in self.saved_prefixes:
            if key.startswith(inside):
                return saved + key[len(inside):]
        raise KeyError(key)

    def transformers_class(self, role: str = "backbone"):
        import transformers

        return getattr(transformers, getattr(self, role))


# ------------------------------------------------------------------------------ tokens
QWEN2_VL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
CODE_TOKENS = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
               "<|repo_name|>", "<|file_sep|>")
QWEN3_TOKENS = QWEN2_VL_TOKENS + CODE_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>")
# Added, but not special (the real tokenizers mark them so: decoding with skip_special_tokens keeps them)
NOT_SPECIAL = frozenset(CODE_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>"))


# ------------------------------------------------------------------------------ tiny configs
def _tiny_text(ids: dict, hidden: int, layers: int, **more) -> dict:
    """The text fields every tiny config shares; heads grow with the width so the head dim stays 16."""
    return dict(vocab_size=ids["vocab_size"], hidden_size=hidden, intermediate_size=hidden * 2,
                num_hidden_layers=layers, num_attention_heads=max(4, hidden // 16),
                num_key_value_heads=max(2, hidden // 32), max_position_embeddings=4096, tie_word_embeddings=True,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                dtype="float32", **more)


def _tiny_vision_language(ids: dict, text: dict, vision: dict) -> dict:
    return dict(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True, dtype="float32")


def _tiny_vision(vision_hidden: int, text_hidden: int, patch_size: int, **more) -> dict:
    return dict(depth=2, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_heads=4,
                out_hidden_size=text_hidden, spatial_merge_size=2, temporal_patch_size=2, patch_size=patch_size,
                **more)


# M-RoPE's 8 frequency pairs of a 16-wide head split [2, 3, 3] (temporal, height, width)
_TINY_MROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
_TINY_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}


def _tiny_qwen2_vl(ids, text_hidden, vision_hidden, text_layers):
    vision = dict(depth=2, embed_dim=vision_hidden, hidden_size=text_hidden, mlp_ratio=2, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2)
    return _tiny_vision_language(ids, _tiny_text(ids, text_hidden, text_layers, rope_parameters=_TINY_MROPE), vision)


def _tiny_qwen2_5_vl(ids, text_hidden, vision_hidden, text_layers):
    vision = _tiny_vision(vision_hidden, text_hidden, 14, window_size=112, fullatt_block_indexes=[1],
                          tokens_per_second=2)
    return _tiny_vision_language(ids, _tiny_text(ids, text_hidden, text_layers, rope_parameters=_TINY_MROPE), vision)


def _tiny_qwen3_vl(ids, text_hidden, vision_hidden, text_layers):
    """Interleaved M-RoPE; DeepStack features added at the first LM layer."""
    vision = _tiny_vision(vision_hidden, text_hidden, 16, num_position_embeddings=64, deepstack_visual_indexes=[0])
    text = _tiny_text(ids, text_hidden, text_layers, head_dim=16, rope_parameters={
        "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    return _tiny_vision_language(ids, text, vision)


def _tiny_moe(config: dict, text_hidden: int, **more) -> dict:
    """A tiny config's decoder with every MLP a mixture of 4 experts, 2 routed per token."""
    config["text_config"].update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=text_hidden,
                                 norm_topk_prob=True, **more)
    return config


def _tiny_qwen3_vl_moe(ids, text_hidden, vision_hidden, text_layers):
    """Qwen3-VL's tiny config with mixture-of-experts MLPs in every layer (`decoder_sparse_step` 1)."""
    return _tiny_moe(_tiny_qwen3_vl(ids, text_hidden, vision_hidden, text_layers), text_hidden,
                     decoder_sparse_step=1, mlp_only_layers=[])


def _tiny_qwen3_5_moe(ids, text_hidden, vision_hidden, text_layers):
    """Qwen3.5's tiny config with mixture-of-experts MLPs and the shared expert of its MoE sibling."""
    return _tiny_moe(_tiny_qwen3_5(ids, text_hidden, vision_hidden, text_layers), text_hidden,
                     shared_expert_intermediate_size=text_hidden)


def _tiny_qwen3_5(ids, text_hidden, vision_hidden, text_layers):
    """A quarter of a 32-wide head rotated (partial rotary) and 4 layers whatever `text_layers`: three Gated
    DeltaNet (linear attention) and one full attention, its published pattern."""
    vision = _tiny_vision(vision_hidden, text_hidden, 16, num_position_embeddings=64)
    text = _tiny_text(ids, text_hidden, 4, head_dim=32, layer_types=[
        "linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, rope_parameters={
            "rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    return _tiny_vision_language(ids, text, vision)


def _tiny_qwen2(ids, text_hidden, vision_hidden, text_layers):
    return _tiny_text(ids, text_hidden, text_layers, rope_parameters=_TINY_ROPE)


def _tiny_qwen3(ids, text_hidden, vision_hidden, text_layers):
    return _tiny_text(ids, text_hidden, text_layers, head_dim=16, rope_parameters=_TINY_ROPE)


# ------------------------------------------------------------------------------ published architectures
_QWEN2_5_VL_IDS = dict(bos_token_id=151643, eos_token_id=151645, vision_start_token_id=151652,
                       vision_end_token_id=151653, vision_token_id=151654, image_token_id=151655, video_token_id=151656)
_QWEN3_VL_IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                     vision_end_token_id=151653)
_QWEN3_5_IDS = dict(image_token_id=248056, video_token_id=248057, vision_start_token_id=248053,
                    vision_end_token_id=248054)


def _qwen2_5_vl(hidden, layers, intermediate, heads, kv_heads, vocab, tied, billions) -> Published:
    """Qwen/Qwen2.5-VL-*-Instruct: the same 32-block windowed ViT in every size."""
    text = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, hidden_act="silu",
                max_position_embeddings=128000, rms_norm_eps=1e-6, rope_theta=1000000.0,
                rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": [16, 24, 24]},
                attention_dropout=0.0, use_sliding_window=False, sliding_window=32768, max_window_layers=70,
                initializer_range=0.02, tie_word_embeddings=tied, model_type="qwen2_5_vl_text", **_QWEN2_5_VL_IDS)
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu")
    return Published(text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN2_5_VL_IDS))


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
    return Published(text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN3_VL_IDS))


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
    return Published(text, vision, billions, dict(tie_word_embeddings=tied, **_QWEN3_5_IDS), nominal=True)


def _qwen3_vl_moe(hidden, layers, intermediate, heads, moe_intermediate, billions) -> Published:
    """Qwen/Qwen3-VL-*-A*B-Instruct: Qwen3-VL's decoder with every MLP 128 experts, 8 routed per token (no shared
    expert), the 27-block vision tower with DeepStack at blocks 8, 16, 24; embeddings untied."""
    dense = _qwen3_vl(hidden, layers, intermediate, heads, 4, False, 27, 1152, 4304, [8, 16, 24], billions)
    text = dict(dense.text, moe_intermediate_size=moe_intermediate, num_experts=128, num_experts_per_tok=8,
                decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True, router_aux_loss_coef=0.001)
    return dataclasses.replace(dense, text=text)


def _qwen3_5_moe(hidden, layers, heads, value_heads, moe_intermediate, experts, per_token, billions) -> Published:
    """Qwen/Qwen3.5-*-A*B: Qwen3.5's hybrid decoder with every MLP a mixture of experts plus a shared expert."""
    dense = _qwen3_5(hidden, layers, 0, heads, 2, value_heads, False, 27, 1152, 4304, 16, billions)
    text = {k: v for k, v in dense.text.items() if k != "intermediate_size"}  # every layer's MLP is the mixture
    text.update(moe_intermediate_size=moe_intermediate, shared_expert_intermediate_size=moe_intermediate,
                num_experts=experts, num_experts_per_tok=per_token, router_aux_loss_coef=0.001)
    return dataclasses.replace(dense, text=text)


# ------------------------------------------------------------------------------ the families
_QWEN2_VL_LAYOUT = (("visual.", "visual."), ("language_model.", "model."))
_TEXT_LM = r".*layers.*\."  # a text LM has no tower to keep LoRA out of: every decoder layer
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_vl", ("qwen2_vl",), "Qwen2VLModel", "Qwen2VLForConditionalGeneration", "Qwen2VLConfig",
           vision=True, template="qwen2_5_vl", processor="Qwen2VLProcessor",
           seq_cls="Qwen2VLForSequenceClassification", saved_prefixes=_QWEN2_VL_LAYOUT,
           tiny=TinySpec(QWEN2_VL_TOKENS, _tiny_qwen2_vl)),
    Family("qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLModel", "Qwen2_5_VLForConditionalGeneration",
           "Qwen2_5_VLConfig", vision=True, template="qwen2_5_vl", processor="Qwen2_5_VLProcessor",
           seq_cls="Qwen2_5_VLForSequenceClassification", saved_prefixes=_QWEN2_VL_LAYOUT,
           tiny=TinySpec(QWEN2_VL_TOKENS, _tiny_qwen2_5_vl),
           published={  # Qwen/Qwen2.5-VL-*-Instruct config.json; totals from the model cards
               "qwen2_5_vl_3b": _qwen2_5_vl(2048, 36, 11008, 16, 2, 151936, True, 3.75),
               "qwen2_5_vl_7b": _qwen2_5_vl(3584, 28, 18944, 28, 4, 152064, False, 8.29),
               "qwen2_5_vl_32b": _qwen2_5_vl(5120, 64, 27648, 40, 8, 152064, False, 33.45),
               "qwen2_5_vl_72b": _qwen2_5_vl(8192, 80, 29568, 64, 8, 152064, False, 73.41)}),
    Family("qwen3_vl", ("qwen3_vl",), "Qwen3VLModel", "Qwen3VLForConditionalGeneration", "Qwen3VLConfig",
           vision=True, template="qwen3_vl", processor="Qwen3VLProcessor", seq_cls="Qwen3VLForSequenceClassification",
           tiny=TinySpec(QWEN3_TOKENS, _tiny_qwen3_vl, patch_size=16, mean_std="half"),
           published={  # Qwen/Qwen3-VL-*-Instruct config.json
               "qwen3_vl_2b": _qwen3_vl(2048, 28, 6144, 16, 8, True, 24, 1024, 4096, [5, 11, 17], 2.13),
               "qwen3_vl_4b": _qwen3_vl(2560, 36, 9728, 32, 8, True, 24, 1024, 4096, [5, 11, 17], 4.44),
               "qwen3_vl_8b": _qwen3_vl(4096, 36, 12288, 32, 8, False, 27, 1152, 4304, [8, 16, 24], 8.77),
               "qwen3_vl_32b": _qwen3_vl(5120, 64, 25600, 64, 8, False, 27, 1152, 4304, [8, 16, 24], 33.4)}),
    Family("qwen3_vl_moe", ("qwen3_vl_moe",), "Qwen3VLMoeModel", "Qwen3VLMoeForConditionalGeneration",
           "Qwen3VLMoeConfig", vision=True, template="qwen3_vl", processor="Qwen3VLProcessor",
           seq_cls="Qwen3VLMoeForSequenceClassification",
           tiny=TinySpec(QWEN3_TOKENS, _tiny_qwen3_vl_moe, patch_size=16, mean_std="half"),
           published={  # Qwen/Qwen3-VL-*-Instruct config.json; totals counted from their weight index
               "qwen3_vl_30b_a3b": _qwen3_vl_moe(2048, 48, 6144, 32, 768, 31.07),
               "qwen3_vl_235b_a22b": _qwen3_vl_moe(4096, 94, 12288, 64, 1536, 235.67)}),
    Family("qwen3_5", ("qwen3_5",), "Qwen3_5Model", "Qwen3_5ForConditionalGeneration", "Qwen3_5Config",
           vision=True, template="qwen3_5", processor="Qwen3VLProcessor", seq_cls="Qwen3_5ForSequenceClassification",
           shares_prompt=False,
           tiny=TinySpec(QWEN3_TOKENS + ("<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"), _tiny_qwen3_5,
                         split="qwen3_5", patch_size=16, mean_std="half"),
           published={  # Qwen/Qwen3.5-* config.json (dense sizes whose vision towers were seen in the published
               # configs; the multi-token-prediction layer the checkpoints also ship is not part of the model
               # transformers builds)
               "qwen3_5_9b": _qwen3_5(4096, 32, 12288, 16, 4, 32, False, 27, 1152, 4304, 16, 9.0),
               "qwen3_5_27b": _qwen3_5(5120, 64, 17408, 24, 4, 48, False, 27, 1152, 4304, 16, 27.0)}),
    Family("qwen3_5_moe", ("qwen3_5_moe",), "Qwen3_5MoeModel", "Qwen3_5MoeForConditionalGeneration",
           "Qwen3_5MoeConfig", vision=True, template="qwen3_5", processor="Qwen3VLProcessor",
           seq_cls="Qwen3_5MoeForSequenceClassification", shares_prompt=False,
           tiny=TinySpec(QWEN3_TOKENS + ("<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"), _tiny_qwen3_5_moe,
                         split="qwen3_5", patch_size=16, mean_std="half"),
           published={  # Qwen/Qwen3.5-35B-A3B config.json (the model card's 35B; the multi-token-prediction
               # layer it ships is not part of the model transformers builds)
               "qwen3_5_35b_a3b": _qwen3_5_moe(2048, 40, 16, 32, 512, 256, 8, 35.0)}),
    Family("qwen2", ("qwen2",), "Qwen2Model", "Qwen2ForCausalLM", "Qwen2Config", vision=False, template="qwen2",
           seq_cls="Qwen2ForSequenceClassification", lora_scope=_TEXT_LM,
           tiny=TinySpec(QWEN2_VL_TOKENS + CODE_TOKENS, _tiny_qwen2)),
    Family("qwen3", ("qwen3",), "Qwen3Model", "Qwen3ForCausalLM", "Qwen3Config", vision=False, template="qwen3",
           seq_cls="Qwen3ForSequenceClassification", lora_scope=_TEXT_LM, tiny=TinySpec(QWEN3_TOKENS, _tiny_qwen3)),
)}
DEFAULT = "qwen2_5_vl"
TINY_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.tiny is not None)  # what tiny:FAMILY can build


class UnsupportedArchitecture(ValueError):
    pass


def family_named(name: str) -> Family:
    if name not in FAMILIES:
        raise UnsupportedArchitecture(f"unknown family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(config) -> Family:
    """The family of a transformers config (or a config.json dict), by its model type; a
    `*ForSequenceClassification` checkpoint belongs to the family of its backbone."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise UnsupportedArchitecture(f"model type {model_type!r} is not supported; supported model types: {supported} "
                                  "(trust_remote_code stays off, so only architectures transformers ships load)")


def published_architecture(name: str) -> tuple[Family, Published]:
    """The family and architecture of a published size (a preset's name: qwen2_5_vl_7b, ...)."""
    for family in FAMILIES.values():
        if name in family.published:
            return family, family.published[name]
    known = sorted(n for f in FAMILIES.values() for n in f.published)
    raise KeyError(f"unknown architecture {name!r}; known: {known}")


def text_config(config):
    """The language model's config: `text_config` of a vision-language config, else the config itself."""
    return getattr(config, "text_config", None) or config


def language_model(backbone):
    """The decoder stack whose attention the packed layout replaces."""
    return getattr(backbone, "language_model", backbone)


def vision_tower(backbone):
    return getattr(backbone, "visual", None)
