"""A tiny random Qwen2.5-VL checkpoint on disk, for tests and CPU demos.

Nothing can be downloaded where tests run, so this writes a real Hugging Face directory
that goes through exactly the `from_pretrained(path)` code path a 7B checkpoint does:
`config.json` (Qwen2_5_VLConfig), `model.safetensors`, a byte-level BPE tokenizer trained
here with Qwen2.5-VL's special tokens and chat template, and a preprocessor config with
Qwen2.5-VL's real image settings but a small pixel budget. Same seed, same bytes.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from mrm_ray.atomic import atomic_dir

# Qwen2.5-VL's special tokens, in the order the real tokenizer numbers them.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL-7B-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-VL's image settings (CLIP normalisation, 14px patches, 2x2 merge, 2 frames per
# temporal patch); only the pixel budget is small so that CPU tests stay fast.
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

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


def train_tokenizer(seed: int, vocab_size: int = 1024):
    """Train a byte-level BPE with Qwen2's pre-tokenizer; return a `Qwen2Tokenizer`."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    from tokenizers import Regex

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
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(seed), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>",
                              "vision_eos_token": "<|vision_end|>"},
    )
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 32768
    return tokenizer


def tiny_config(tokenizer, *, text_hidden: int = 64, vision_hidden: int = 64, text_layers: int = 2):
    """A Qwen2_5_VLConfig small enough for CPU tests, wired to the tokenizer's ids.

    Attention heads grow with the width so the head dim stays 16, which M-RoPE's sections fill.
    """
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=text_hidden * 2,
            num_hidden_layers=text_layers,
            num_attention_heads=max(4, text_hidden // 16),
            num_key_value_heads=max(2, text_hidden // 32),
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                             "mrope_section": [2, 3, 3]},
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            dtype="float32",
        ),
        vision_config=dict(
            depth=2,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_heads=4,
            out_hidden_size=text_hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        dtype="float32",
    )


def image_processor_config(*, min_pixels: int = TINY_MIN_PIXELS, max_pixels: int = TINY_MAX_PIXELS):
    """Qwen2.5-VL's preprocessor_config.json with a CPU-sized pixel budget."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "merge_size": 2,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": 14,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "temporal_patch_size": 2,
    }


def build_tiny_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, text_hidden: int = 64,
                          vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """Write a tiny random Qwen2.5-VL checkpoint to `out_dir` atomically; return its path."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with atomic_dir(out_dir) as tmp:
        tokenizer = train_tokenizer(seed)
        config = tiny_config(tokenizer, text_hidden=text_hidden, vision_hidden=vision_hidden, text_layers=text_layers)
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        (tmp / "preprocessor_config.json").write_text(
            json.dumps(image_processor_config(), indent=2, sort_keys=True) + "\n")
    return Path(out_dir).resolve()


def shared_tiny_checkpoint(root: str | os.PathLike) -> Path:
    """`root/tiny-qwen2.5-vl`, built once: the `tiny` model of the training, GRPO and demo commands."""
    path = Path(root) / "tiny-qwen2.5-vl"
    if not (path / "config.json").is_file():
        build_tiny_checkpoint(path, seed=0)
    return path


def build_tiny_reward_checkpoint(out_dir: str | os.PathLike, *, seed: int = 0, text_hidden: int = 64,
                                 vision_hidden: int = 64, text_layers: int = 2) -> Path:
    """A tiny *reward* checkpoint (random backbone and head from `seed`), for serving demos and tests."""
    import tempfile

    from mrm_ray.config import HeadConfig
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        base = build_tiny_checkpoint(Path(tmp) / "base", seed=seed, text_hidden=text_hidden,
                                     vision_hidden=vision_hidden, text_layers=text_layers)
        model = RewardModel.from_pretrained(base, head=HeadConfig(init_seed=seed))
        model.provenance = {"base_model": f"tiny random Qwen2.5-VL (seed {seed})"}
        return model.save_pretrained(out_dir, processor=load_processor(base))
