"""The tiny checkpoint is a real Qwen2.5-VL directory, loadable the way a 7B one is."""

import hashlib
import json

import pytest
import torch

from mrm_ray.model.tiny import CLIP_MEAN, CLIP_STD, SPECIAL_TOKENS, build_tiny_checkpoint


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_config_is_tiny_qwen2_5_vl(tiny_checkpoint):
    from transformers import AutoConfig, Qwen2_5_VLConfig

    config = AutoConfig.from_pretrained(tiny_checkpoint)
    assert isinstance(config, Qwen2_5_VLConfig)
    assert config.text_config.hidden_size <= 128
    assert config.text_config.num_hidden_layers == 2
    assert config.vision_config.depth == 2
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    assert (tiny_checkpoint / "model.safetensors").is_file()
    assert not list(tiny_checkpoint.glob("*.bin")) and not list(tiny_checkpoint.glob("*.pt"))


def test_tokenizer_has_qwen_special_tokens_and_template(tiny_checkpoint, processor):
    from transformers import AutoConfig

    tok = processor.tokenizer
    config = AutoConfig.from_pretrained(tiny_checkpoint)
    for token in SPECIAL_TOKENS:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == token
    assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n")
    # round trip through the byte-level BPE
    sample = "The shape is red. Ünïcode 123!"
    assert tok.decode(tok(sample)["input_ids"]) == sample


def test_preprocessor_has_qwen_image_settings(tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert (cfg["patch_size"], cfg["merge_size"], cfg["temporal_patch_size"]) == (14, 2, 2)
    assert cfg["image_mean"] == CLIP_MEAN and cfg["image_std"] == CLIP_STD
    assert cfg["max_pixels"] <= 256 * 256  # small for CPU


def test_loads_through_transformers(tiny_checkpoint, processor):
    from transformers import AutoImageProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_checkpoint)
    assert type(AutoImageProcessor.from_pretrained(tiny_checkpoint)).__name__.startswith("Qwen2VLImageProcessor")
    enc = processor.tokenizer("hello world", return_tensors="pt")
    logits = model(**enc).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        pytest.skip("torchvision absent (CPU torch): AutoProcessor needs it for the video processor; "
                    "load_processor built the image-only processor from the same files")
    from transformers import AutoProcessor

    assert AutoProcessor.from_pretrained(tiny_checkpoint).tokenizer is not None


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, tiny_checkpoint):
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert _digest(again) == _digest(tiny_checkpoint)
    from safetensors.torch import load_file

    a, b = load_file(again / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_rebuild_over_existing_dir_replaces_it(tmp_path):
    out = tmp_path / "ckpt"
    build_tiny_checkpoint(out, seed=0)
    (out / "stale.txt").write_text("old")
    build_tiny_checkpoint(out, seed=0)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
