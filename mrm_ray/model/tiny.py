"""A tiny random checkpoint of any supported family on disk, for tests and CPU demos.

Nothing can be downloaded where tests run, so this writes a real Hugging Face directory
that goes through exactly the `from_pretrained(path)` code path a 7B checkpoint does:
`config.json` (the family's real config class), `model.safetensors`, a byte-level BPE
tokenizer trained here with the family's added tokens and its published chat template
(model/templates/), and, for the vision-language families, preprocessor configs with the
family's real image and video settings but a small pixel budget. Same family and seed, same bytes.
"""

from __future__ import annotations

import json
import os
import random
from importlib import resources
from pathlib import Path

from mrm_ray.atomic import atomic_dir
from mrm_ray.model.families import DEFAULT, NOT_SPECIAL, QWEN2_VL_TOKENS, TINY_FAMILIES, family_named

SPECIAL_TOKENS = QWEN2_VL_TOKENS  # Qwen2.5-VL's, the default family's


def tiny_spec(family: str):
    """The family's tiny checkpoint spec (model/families.py); ValueError for a family without one."""
    spec = family_named(family).tiny
    if spec is None:
        raise ValueError(f"no tiny checkpoint for family {family!r}; one of {', '.join(TINY_FAMILIES)}")
    return spec


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

    spec = tiny_spec(family)
    if spec.split == "qwen3_5":
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
        if i + 1 == len(spec.tokens) or (spec.tokens[i + 1] in NOT_SPECIAL) != (token in NOT_SPECIAL):
            special = token not in NOT_SPECIAL
            tokenizer.add_tokens([AddedToken(t, special=special, normalized=False) for t in run],
                                 special_tokens=special)
            run = []
    tokenizer.chat_template = chat_template(family_named(family).template)
    tokenizer.model_max_length = 32768
    return tokenizer


def tiny_config(tokenizer, *, family: str = DEFAULT, text_hidden: int = 64, vision_hidden: int = 64,
                text_layers: int = 2):
    """The family's real config class, small enough for CPU tests and wired to the tokenizer's ids (the
    family's tiny spec in model/families.py says how)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                          "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    ids["vocab_size"] = len(tokenizer)
    config = tiny_spec(family).config(ids, text_hidden, vision_hidden, text_layers)
    return family_named(family).transformers_class("config")(**config)


def image_processor_config(*, family: str = DEFAULT, min_pixels: int = TINY_MIN_PIXELS,
                           max_pixels: int = TINY_MAX_PIXELS) -> dict:
    """The family's preprocessor_config.json with a CPU-sized pixel budget."""
    spec = tiny_spec(family)
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


_VIDEO_PROCESSORS = {"Qwen2VLProcessor": "Qwen2VLVideoProcessor", "Qwen2_5_VLProcessor": "Qwen2VLVideoProcessor",
                     "Qwen3VLProcessor": "Qwen3VLVideoProcessor"}


def video_processor_config(*, family: str = DEFAULT) -> dict:
    """The family's video_preprocessor_config.json: its images' settings and pixel budget per frame, videos given
    as frames at 2 per second and never sampled again (model/inputs.py's video route)."""
    from mrm_ray.model.inputs import DEFAULT_VIDEO_FPS, MAX_VIDEO_FRAMES

    config = image_processor_config(family=family)
    config.pop("image_processor_type")
    return {**config, "video_processor_type": _VIDEO_PROCESSORS[family_named(family).processor],
            "fps": DEFAULT_VIDEO_FPS, "do_sample_frames": False, "min_frames": 1, "max_frames": MAX_VIDEO_FRAMES}


def build_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, family: str = DEFAULT,
                          text_hidden: int = 64, vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """Write a tiny random checkpoint of `family` to `out_dir` atomically; return its path."""
    import torch

    tiny_spec(family)
    spec = family_named(family)
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
            (tmp / "video_preprocessor_config.json").write_text(
                json.dumps(video_processor_config(family=family), indent=2, sort_keys=True) + "\n")
    return Path(out_dir).resolve()
