"""The backbone families a reward model can be built on, and what differs between them.

Everything family-specific lives here: which transformers classes hold the backbone, its
checkpoints and its processor; whether it sees images; how its positions are numbered
(M-RoPE over (temporal, height, width) for the vision-language families, one axis for the
text-only LMs); and whether the shared-prompt packing is exact for it. The rest of the code
asks a `Family`, never the model type.

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

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # what `mrm-ray tiny --family` and presets call it
    model_types: tuple[str, ...]  # config.json `model_type` values it covers
    backbone: str  # transformers class of the base model (no LM head)
    generator: str  # transformers class published checkpoints are saved as
    config: str  # transformers config class
    vision: bool  # takes images (pixel_values, image_grid_thw, M-RoPE)
    processor: str | None = None  # transformers processor class (vision families)
    seq_cls: str = ""  # the `*ForSequenceClassification` architecture name (transformers' or vLLM's)
    shares_prompt: bool = True  # packed groups (one prompt, many responses) are exact
    # backbone module prefix -> the prefix its published checkpoints store it under (Qwen2-VL and Qwen2.5-VL keep
    # their original layout: the vision tower at the top, the decoder under `model.`)
    saved_prefixes: tuple[tuple[str, str], ...] = (("", "model."),)

    def saved_name(self, key: str) -> str:
        """A backbone parameter's name in the family's published checkpoint layout."""
        for inside, saved in self.saved_prefixes:
            if key.startswith(inside):
                return saved + key[len(inside):]
        raise KeyError(key)

    def transformers_class(self, role: str = "backbone"):
        import transformers

        return getattr(transformers, getattr(self, role))


_QWEN2_VL_LAYOUT = (("visual.", "visual."), ("language_model.", "model."))
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("qwen2_vl", ("qwen2_vl",), "Qwen2VLModel", "Qwen2VLForConditionalGeneration", "Qwen2VLConfig",
           vision=True, processor="Qwen2VLProcessor", seq_cls="Qwen2VLForSequenceClassification",
           saved_prefixes=_QWEN2_VL_LAYOUT),
    Family("qwen2_5_vl", ("qwen2_5_vl",), "Qwen2_5_VLModel", "Qwen2_5_VLForConditionalGeneration",
           "Qwen2_5_VLConfig", vision=True, processor="Qwen2_5_VLProcessor",
           seq_cls="Qwen2_5_VLForSequenceClassification", saved_prefixes=_QWEN2_VL_LAYOUT),
    Family("qwen3_vl", ("qwen3_vl",), "Qwen3VLModel", "Qwen3VLForConditionalGeneration", "Qwen3VLConfig",
           vision=True, processor="Qwen3VLProcessor", seq_cls="Qwen3VLForSequenceClassification"),
    Family("qwen3_vl_moe", ("qwen3_vl_moe",), "Qwen3VLMoeModel", "Qwen3VLMoeForConditionalGeneration",
           "Qwen3VLMoeConfig", vision=True, processor="Qwen3VLProcessor",
           seq_cls="Qwen3VLMoeForSequenceClassification"),
    Family("qwen3_5", ("qwen3_5",), "Qwen3_5Model", "Qwen3_5ForConditionalGeneration", "Qwen3_5Config",
           vision=True, processor="Qwen3VLProcessor", seq_cls="Qwen3_5ForSequenceClassification",
           shares_prompt=False),
    Family("qwen2", ("qwen2",), "Qwen2Model", "Qwen2ForCausalLM", "Qwen2Config", vision=False,
           seq_cls="Qwen2ForSequenceClassification"),
    Family("qwen3", ("qwen3",), "Qwen3Model", "Qwen3ForCausalLM", "Qwen3Config", vision=False,
           seq_cls="Qwen3ForSequenceClassification"),
)}
DEFAULT = "qwen2_5_vl"


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


def text_config(config):
    """The language model's config: `text_config` of a vision-language config, else the config itself."""
    return getattr(config, "text_config", None) or config


def language_model(backbone):
    """The decoder stack whose attention the packed layout replaces."""
    return getattr(backbone, "language_model", backbone)


def vision_tower(backbone):
    return getattr(backbone, "visual", None)
