"""A tiny random checkpoint of any supported family on disk, for tests and CPU demos.

Nothing can be downloaded where tests run, so this writes a real Hugging Face directory
that goes through exactly the `from_pretrained(path)` code path a 7B checkpoint does:
`config.json` (the family's real config class), `model.safetensors`, a byte-level BPE
tokenizer trained here with the family's added tokens and its published chat template
(model/templates/), and, for the vision-language families, a preprocessor config with the
family's real image settings but a small pixel budget. Same family and seed, same bytes.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mrm_ray.atomic import atomic_dir
from mrm_ray.model.families import DEFAULT, Family, family_named

_QWEN2_VL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
_CODE_TOKENS = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>")
_QWEN3_TOKENS = _QWEN2_VL_TOKENS + _CODE_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>")
# Added, but not special (the real tokenizers mark them so: decoding with skip_special_tokens keeps them)
_NOT_SPECIAL = frozenset(_CODE_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>"))

# The pre-tokenizer patterns of Qwen2's and Qwen3.5's tokenizers
_QWEN2_SPLIT = "qwen2"
_QWEN3_5_SPLIT = "qwen3_5"


@dataclass(frozen=True)
class TinyFamily:
    """What a tiny checkpoint of a family needs beyond its config: tokens, template, image settings."""

    tokens: tuple[str, ...]  # added tokens, after the trained vocabulary
    template: str  # model/templates/<template>.jinja
    split: str = _QWEN2_SPLIT
    patch_size: int = 14  # vision families: the image processor's patch (16 from Qwen3-VL on)
    mean_std: str = "clip"  # clip (Qwen2/2.5-VL) or half (0.5, 0.5: Qwen3-VL, Qwen3.5)


TINY = {
    "qwen2_vl": TinyFamily(_QWEN2_VL_TOKENS, "qwen2_5_vl"),
    "qwen2_5_vl": TinyFamily(_QWEN2_VL_TOKENS, "qwen2_5_vl"),
    "qwen3_vl": TinyFamily(_QWEN3_TOKENS, "qwen3_vl", patch_size=16, mean_std="half"),
    "qwen3_5": TinyFamily(_QWEN3_TOKENS + ("<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"), "qwen3_5",
                          split=_QWEN3_5_SPLIT, patch_size=16, mean_std="half"),
    "qwen2": TinyFamily(_QWEN2_VL_TOKENS + _CODE_TOKENS, "qwen2"),
    "qwen3": TinyFamily(_QWEN3_TOKENS, "qwen3"),
}
FAMILY_NAMES = tuple(TINY)

SPECIAL_TOKENS = _QWEN2_VL_TOKENS  # Qwen2.5-VL's, the default family's


def chat_template(name: str) -> str:
    """A family's published chat template, verbatim (model/templates/)."""
    return resources.files("mrm_ray.model").joinpath("templates", f"{name}.jinja").read_text()


CHAT_TEMPLATE = chat_template("qwen2_5_vl")

# The families' image settings (normalisation, patch, 2x2 merge, 2 frames per temporal patch);
# only the pixel budget is small so that CPU tests stay fast.
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]

_WORDS = (
    "the a an is are was of to in on and or with for this that image picture photo shows "
    "what which where who how many colour color shape shapes square circle triangle red "
    "green blue yellow black white orange purple one two three four five six seven eight "
    "nine ten left right top bottom small large there answer question please describe "
    "detail scene person people man woman dog cat car tree sky water table cup it they "
    "be not no yes can see appears looks like background foreground helpful assistant "
    "user system response good bad correct wrong better worse because above below near"
).split()


def _training_corpus(seed: int) -> list[str]:
    """Deterministic English-like text that covers the chat template and common words."""
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 16))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ","])
        lines.append(sentence + (" " + str(rng.randint(0, 999)) if rng.random() < 0.2 else ""))
    lines += ["system\nYou are a helpful assistant.", "user\n", "assistant\n", "Picture 1: "]
    return lines


def train_tokenizer(seed: int, vocab_size: int = 1024, *, family: str = DEFAULT):
    """Train a byte-level BPE with the family's pre-tokenizer, add its tokens and chat template; return the
    family's tokenizer class (`Qwen2Tokenizer`, or `Qwen3_5Tokenizer`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    spec = TINY[family]
    if spec.split == _QWEN3_5_SPLIT:
        from transformers import Qwen3_5Tokenizer as tokenizer_class
        from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX
    else:
        from transformers import Qwen2Tokenizer as tokenizer_class
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(spec.tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vision = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_bos_token": "<|vision_start|>",
              "vision_eos_token": "<|vision_end|>"} if family_named(family).vision else {}
    tokenizer = tokenizer_class(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=vision,
    )
    run: list[str] = []  # consecutive tokens of one kind, added together
    for i, token in enumerate(spec.tokens):
        run.append(token)
        if i + 1 == len(spec.tokens) or (spec.tokens[i + 1] in _NOT_SPECIAL) != (token in _NOT_SPECIAL):
            special = token not in _NOT_SPECIAL
            tokenizer.add_tokens([AddedToken(t, special=special, normalized=False) for t in run],
                                 special_tokens=special)
            run = []
    tokenizer.chat_template = chat_template(spec.template)
    tokenizer.model_max_length = 32768
    return tokenizer


def _ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                             "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}


def _text(tokenizer, ids, hidden: int, layers: int, **more) -> dict:
    """The text fields every family shares; heads grow with the width so the head dim stays 16."""
    return dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                num_attention_heads=max(4, hidden // 16), num_key_value_heads=max(2, hidden // 32),
                max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], dtype="float32", **more)


def _vision_ids(ids) -> dict:
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def tiny_config(tokenizer, *, family: str = DEFAULT, text_hidden: int = 64, vision_hidden: int = 64,
                text_layers: int = 2):
    """The family's real config class, small enough for CPU tests and wired to the tokenizer's ids.

    Qwen2-VL and Qwen2.5-VL split M-RoPE's 8 frequency pairs [2, 3, 3] (temporal, height,
    width); Qwen3-VL interleaves them; Qwen3.5 rotates a quarter of a 32-wide head (partial
    rotary) and has 4 layers: three Gated DeltaNet (linear attention) and one full attention,
    its published pattern. Qwen3-VL adds its DeepStack features at the first LM layer.
    """
    ids = _ids(tokenizer)
    spec = family_named(family)
    cls = spec.transformers_class("config")
    mrope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
    if family == "qwen2":
        return cls(**_text(tokenizer, ids, text_hidden, text_layers,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}))
    if family == "qwen3":
        return cls(**_text(tokenizer, ids, text_hidden, text_layers, head_dim=16,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}))
    vision = dict(depth=2, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2, num_heads=4,
                  out_hidden_size=text_hidden, spatial_merge_size=2, temporal_patch_size=2,
                  patch_size=TINY[family].patch_size)
    if family == "qwen2_5_vl":
        vision |= dict(window_size=112, fullatt_block_indexes=[1], tokens_per_second=2)
        text = _text(tokenizer, ids, text_hidden, text_layers, rope_parameters=mrope)
    elif family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=vision_hidden, hidden_size=text_hidden, mlp_ratio=2, num_heads=4,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        text = _text(tokenizer, ids, text_hidden, text_layers, rope_parameters=mrope)
    elif family == "qwen3_vl":
        vision |= dict(num_position_embeddings=64, deepstack_visual_indexes=[0])
        text = _text(tokenizer, ids, text_hidden, text_layers, head_dim=16, rope_parameters={
            "rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    elif family == "qwen3_5":
        vision |= dict(num_position_embeddings=64)
        text = _text(tokenizer, ids, text_hidden, 4, head_dim=32, layer_types=[
            "linear_attention", "linear_attention", "linear_attention", "full_attention"],
            linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
            linear_num_value_heads=4, rope_parameters={
                "rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    else:
        raise ValueError(f"no tiny config for family {family!r}")
    return cls(text_config=text, vision_config=vision, **_vision_ids(ids), tie_word_embeddings=True, dtype="float32")


def image_processor_config(*, family: str = DEFAULT, min_pixels: int = TINY_MIN_PIXELS,
                           max_pixels: int = TINY_MAX_PIXELS) -> dict:
    """The family's preprocessor_config.json with a CPU-sized pixel budget."""
    spec = TINY[family]
    mean, std = (CLIP_MEAN, CLIP_STD) if spec.mean_std == "clip" else (HALF, HALF)
    if spec.patch_size == 16:  # a budget of whole 32 px merged patches, as 28 px ones for 14 px patches
        min_pixels, max_pixels = min_pixels * 64 // 49, max_pixels * 64 // 49
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": mean,
        "image_std": std,
        "image_processor_type": "Qwen2VLImageProcessor",
        "merge_size": 2,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": spec.patch_size,
        "processor_class": family_named(family).processor,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "temporal_patch_size": 2,
    }


def build_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, family: str = DEFAULT,
                          text_hidden: int = 64, vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """Write a tiny random checkpoint of `family` to `out_dir` atomically; return its path."""
    import torch

    if family not in TINY:
        raise ValueError(f"no tiny checkpoint for family {family!r}; one of {', '.join(TINY)}")
    spec: Family = family_named(family)
    with atomic_dir(out_dir) as tmp:
        tokenizer = train_tokenizer(seed, family=family)
        config = tiny_config(tokenizer, family=family, text_hidden=text_hidden, vision_hidden=vision_hidden,
                             text_layers=text_layers)
        torch.manual_seed(seed)
        model = spec.transformers_class("generator")(config).eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "chat_template.jinja").write_text(tokenizer.chat_template)
        if spec.vision:
            (tmp / "preprocessor_config.json").write_text(
                json.dumps(image_processor_config(family=family), indent=2, sort_keys=True) + "\n")
    return Path(out_dir).resolve()


def shared_tiny_checkpoint(root: str | os.PathLike, name: str = "tiny") -> Path:
    """The `tiny` model of the training, GRPO and demo commands, built once: `root/tiny-qwen2.5-vl`, or for
    `tiny:FAMILY` that family's, `root/tiny-FAMILY`."""
    family = name.partition(":")[2] or DEFAULT
    if family not in TINY:
        raise ValueError(f"{name!r}: no tiny checkpoint for family {family!r}; one of "
                         + ", ".join(f"tiny:{f}" for f in TINY))
    path = Path(root) / ("tiny-qwen2.5-vl" if family == DEFAULT else f"tiny-{family}")
    if not (path / "config.json").is_file():
        build_tiny_checkpoint(path, seed=0, family=family)
    return path


def build_tiny_reward_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, family: str = DEFAULT,
                                 text_hidden: int = 64, vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """A tiny *reward* checkpoint of `family` (random backbone and head from `seed`), for serving demos and tests."""
    import tempfile

    from mrm_ray.config import HeadConfig
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        base = build_tiny_checkpoint(Path(tmp) / "base", seed=seed, family=family, text_hidden=text_hidden,
                                     vision_hidden=vision_hidden, text_layers=text_layers)
        model = RewardModel.from_pretrained(base, head=HeadConfig(init_seed=seed))
        model.provenance = {"base_model": f"tiny random {family} (seed {seed})"}
        return model.save_pretrained(out_dir, processor=load_processor(base))
