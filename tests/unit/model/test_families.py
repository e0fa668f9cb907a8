"""Every supported family: a real tiny checkpoint, the template's own rendering, and packed groups that
equal each response alone (rewards and gradients), with a video on the frames route among them and, for the
vision families, videos on the family's own video path; Qwen3.5's recurrent layers fall back to one response
per row, and sharing the prompt there would be wrong."""

import dataclasses
import io
import json
import random

import pytest
import torch

from helpers.images import noise_png
from helpers.packing import packed_equals_alone
from mrm_ray.model.families import FAMILIES, UnsupportedArchitecture, family_named, family_of
from mrm_ray.model.inputs import END_OF_TURN, PairEncoder, prompt_text
from mrm_ray.model.packing import collate_groups
from mrm_ray.model.processor import TextOnly, load_processor
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.model.families import TINY_FAMILIES
from mrm_ray.model.tiny import chat_template

CONFIG_CLASS = {"qwen2_vl": "Qwen2VLConfig", "qwen2_5_vl": "Qwen2_5_VLConfig", "qwen3_vl": "Qwen3VLConfig",
                "qwen3_5": "Qwen3_5Config", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
                "qwen3_vl_moe": "Qwen3VLMoeConfig", "qwen3_5_moe": "Qwen3_5MoeConfig"}
WORDS = "the a red blue shape image shows is there cat dog on table two three left right why".split()


def families_layers(model):
    from mrm_ray.model.families import language_model

    return list(language_model(model.backbone).layers)


def _text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family(request, family_checkpoint):
    path = family_checkpoint(request.param)
    return request.param, path, RewardModel.from_pretrained(path).eval(), PairEncoder(load_processor(path))


def test_every_family_is_a_real_checkpoint_of_its_config_class(family):
    from transformers import AutoConfig

    name, path, model, encoder = family
    config = AutoConfig.from_pretrained(path)
    assert type(config).__name__ == CONFIG_CLASS[name]
    assert family_of(config).name == name == model.family.name
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert (path / "chat_template.jinja").read_text() == chat_template(FAMILIES[name].template)
    tok = encoder.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in FAMILIES[name].tiny.tokens]
    assert len(set(ids)) == len(ids) and min(ids) >= len(tok) - len(ids)  # the family's tokens, after the vocabulary
    for token in FAMILIES[name].tiny.tokens:
        assert tok(token, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(token)]
    if family_named(name).vision:
        assert config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
        assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
        pre = json.loads((path / "preprocessor_config.json").read_text())
        assert pre["patch_size"] == FAMILIES[name].tiny.patch_size == encoder.processor.image_processor.patch_size
    else:
        assert not (path / "preprocessor_config.json").exists()
    if name in ("qwen3_5", "qwen3_5_moe"):
        assert config.text_config.layer_types.count("linear_attention") == 3
    if name.endswith("_moe"):  # every decoder layer's MLP a mixture of 4 experts, 2 routed per token
        assert (config.text_config.num_experts, config.text_config.num_experts_per_tok) == (4, 2)
        layers = families_layers(model)
        assert all(type(layer.mlp).__name__.endswith("SparseMoeBlock") for layer in layers), \
            [type(layer.mlp).__name__ for layer in layers]


def test_prompt_and_response_are_the_templates_own_rendering_of_the_conversation(family):
    name, _, _, encoder = family
    messages = [{"role": "user", "content": [{"type": "text", "text": "Which shape is red?"}]}]
    whole = encoder.processor.apply_chat_template(
        [*messages, {"role": "assistant", "content": "The square."}], tokenize=False)
    assert whole.startswith(prompt_text(encoder.processor, messages) + "The square." + END_OF_TURN)
    if name in ("qwen3", "qwen3_5", "qwen3_5_moe"):  # thinking templates: a final answer follows an empty think block
        assert prompt_text(encoder.processor, messages).endswith("<think>\n\n</think>\n\n")


def test_a_multi_turn_conversation_is_the_processors_own_rendering_of_it(family):
    """System, a user turn with an image, the assistant's answer, a second user turn with another image: the prompt
    and each response are token for token the processor's rendering of the whole conversation (images expanded),
    up to the end of turn the reward is read at, and the responses share the conversation's encoding."""
    import numpy as np

    from mrm_ray.model.inputs import load_image

    name, _, model, encoder = family
    rng = random.Random(f"turns-{name}")
    images = [noise_png(rng), noise_png(rng)] if model.family.vision else []
    shown = [{"type": "image"}] if images else []
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [*shown, {"type": "text", "text": "What colour is the first shape?"}]},
                {"role": "assistant", "content": "It is red."},
                {"role": "user", "content": [*shown, {"type": "text", "text": "And the second one?"}]}]
    responses = ["Blue, unlike the first.", "Also red."]
    (group,), landed = encoder.encode_groups(messages, images, responses)
    assert landed == [(0, 0), (0, 1)]  # one group: the conversation encoded once for both responses
    for response, ids in zip(responses, group["responses"]):
        whole = encoder.processor.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False)
        expected = encoder.processor(text=[whole], images=[load_image(i) for i in images] or None,
                                     return_tensors="np")["input_ids"][0]
        ours = np.concatenate([group["prompt_ids"], ids])
        assert ours.tolist() == expected[:len(ours)].tolist()
        assert encoder.tokenizer.decode(expected[len(ours):]).strip() == ""  # only the template's closing newline
        assert ours[-1] == encoder.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if images:
        assert len(group["image_grid_thw"]) == 2


def test_packed_groups_equal_each_response_alone(family):
    """Rewards and every parameter's gradient, several groups per row, against one padded row per response."""
    name, _, model, encoder = family
    rng = random.Random(name)
    vision = model.family.vision
    groups = []
    for n_images in (0, 1, 2):
        images = [noise_png(rng) for _ in range(n_images if vision else 0)]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": _text(rng, 1, 8)}]
        groups.append(encoder.encode_group([{"role": "user", "content": content}], images,
                                           [_text(rng, 1, 20) for _ in range(rng.randint(1, 4))]))
    if vision:  # a video on the frames route: its 3 frames (one size), in order, then an image
        from mrm_ray.model.inputs import frames_as_images

        frames = [noise_png(rng, smallest=40, largest=40) for _ in range(3)]
        prompt, images = frames_as_images([{"role": "user", "content": [
            {"type": "video"}, {"type": "image"}, {"type": "text", "text": _text(rng, 1, 8)}]}],
            [noise_png(rng)], [frames])
        groups.append(encoder.encode_group(prompt, images, [_text(rng, 1, 20) for _ in range(3)]))
    batch, _, want, _ = packed_equals_alone(model, encoder, groups, 0)
    if model.shares_prompt:
        assert batch["input_ids"].shape[0] == 1  # every group in one row, each prompt once
    else:  # Qwen3.5: one response per row; sharing the prompt would carry a response's state into the next
        assert batch["input_ids"].shape[0] == len(want)
        shared = collate_groups(groups, pad_token_id=encoder.pad_token_id, row_tokens=10_000)
        with pytest.raises(ValueError, match="cannot share a prompt or a row"):
            model(**shared)  # refused, not silently wrong
        family = model.family
        model.family = dataclasses.replace(family, shares_prompt=True)  # what sharing would give
        try:
            with torch.no_grad():
                assert (model(**shared) - want).abs().max() > 1e-3
        finally:
            model.family = family


def test_an_unsupported_architecture_names_the_supported_ones():
    with pytest.raises(UnsupportedArchitecture, match="qwen2_5_vl.*qwen3_5.*qwen3"):
        family_of({"model_type": "llama"})
    assert set(TINY_FAMILIES) <= set(FAMILIES)


def test_a_text_only_processor_refuses_images(family_checkpoint):
    processor = load_processor(family_checkpoint("qwen2"))
    with pytest.raises(TextOnly, match="route image items"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}],
                                      tokenize=False)


def test_a_text_only_member_scores_text_and_is_refused_for_images(tmp_path):
    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint, check, reference_family
    from mrm_ray.model.scorer import Scorer

    path = str(build_tiny_reward_checkpoint(tmp_path / "qwen3-reward", seed=1, family="qwen3"))
    assert reference_family(path).name == "qwen3"
    with pytest.raises(ValueError, match="member t: .*text-only qwen3 .*modalities: \\[text\\]"):
        check(path, modalities=("image", "text"), name="t")
    check(path, modalities=("text",))
    text, image = Scorer(path).score_items([{"prompt": "Is it red?", "response": "Yes."},
                                            {"prompt": "And this?", "images": [noise_png(random.Random(0))],
                                             "response": "Yes."}])
    assert isinstance(text, float) and "no images" in image  # that item's message; the batch goes on


def test_the_same_family_and_seed_write_the_same_bytes(tmp_path):
    import hashlib

    from mrm_ray.model.tiny import build_tiny_checkpoint

    def digest(path):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}

    a, b = (build_tiny_checkpoint(tmp_path / name, seed=0, family="qwen3_vl") for name in ("a", "b"))
    assert digest(a) == digest(b)
    assert digest(build_tiny_checkpoint(tmp_path / "c", seed=1, family="qwen3_vl"))["model.safetensors"] != \
        digest(a)["model.safetensors"]


def _video_group(model, encoder, rng, *, frames: int, side: int, image: bool, responses: int) -> dict:
    """A group whose prompt holds a video on the family's own video path, as the family's video processor gives
    it (which needs torchvision, absent here): `pixel_values_videos` of `frames` frames (2 per temporal patch),
    `video_grid_thw`, `<|video_pad|>` expanded (Qwen3-VL and Qwen3.5: per temporal patch, after its timestamp
    text, as their processors write it), Qwen2.5-VL's `second_per_grid_ts` (4 frames a second: 0.5 s per
    patch). The ids, `mm_token_type_ids` and any image come from the real processor."""
    import numpy as np
    from PIL import Image

    vision = model.backbone.config.vision_config
    t, hw = -(-frames // vision.temporal_patch_size), side * side
    video = np.random.default_rng(rng.randint(0, 10**6)).standard_normal(
        (t * hw, 3 * vision.temporal_patch_size * vision.patch_size ** 2)).astype(np.float32)
    content = [{"type": "video"}] + [{"type": "image"}] * image + [{"type": "text", "text": _text(rng, 1, 8)}]
    text = prompt_text(encoder.processor, [{"role": "user", "content": content}])
    pads = "<|video_pad|>" * (hw // 4)
    if model.family.processor == "Qwen3VLProcessor":
        text = text.replace("<|vision_start|><|video_pad|><|vision_end|>", "".join(
            f"<{(2 * k + 0.5) / 4:.1f} seconds><|vision_start|>{pads}<|vision_end|>" for k in range(t)), 1)
    else:
        text = text.replace("<|video_pad|>", pads * t, 1)
    group = {"pixel_values_videos": video, "video_grid_thw": np.array([[t, side, side]])}
    if image:
        pixels = encoder.processor.image_processor(images=[Image.open(io.BytesIO(noise_png(rng)))],
                                                   return_tensors="np")
        group.update(pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"])
        text = text.replace("<|image_pad|>", "<|image_pad|>" * (int(pixels["image_grid_thw"].prod()) // 4), 1)
    tokenizer = encoder.tokenizer
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
    group.update(prompt_ids=ids, prompt_mm_token_type_ids=np.select(
        [ids == tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")],
        [1, 2], 0).astype(np.int64), responses=[encoder.encode_response(_text(rng, 1, 20)) for _ in range(responses)])
    if model.family.name == "qwen2_5_vl":
        group["second_per_grid_ts"] = np.array([0.5], np.float32)
    assert (group["prompt_mm_token_type_ids"] == 2).sum() == t * hw // 4
    return group


def test_packed_groups_with_videos_on_the_family_video_path_equal_each_response_alone(family):
    """The video path in the packed forward and its positions: groups with videos (of 3 and 4 frames, with and
    without an image beside them) and without, several per row, against one padded row per response (rewards
    and every gradient); the frames' order and Qwen2.5-VL's seconds per patch move the rewards, so M-RoPE's
    temporal axis is read, not ignored."""
    name, _, model, encoder = family
    rng = random.Random(f"video {name}")
    if not model.family.vision:  # a text-only model refuses a video's features, as it refuses images
        batch = collate_groups([encoder.encode_group(_text(rng, 1, 8), [], ["yes"])], pad_token_id=encoder.pad_token_id)
        batch.update(pixel_values_videos=torch.zeros(16, 8), video_grid_thw=torch.tensor([[2, 2, 2]]))
        with pytest.raises(ValueError, match="takes no images or videos"):
            model(**batch)
        return
    groups = [_video_group(model, encoder, rng, frames=4, side=4, image=False, responses=3),
              encoder.encode_group(_text(rng, 1, 8), [noise_png(rng)], [_text(rng, 1, 20)]),
              _video_group(model, encoder, rng, frames=3, side=2, image=True, responses=2),
              encoder.encode_group(_text(rng, 1, 8), [], [_text(rng, 1, 20) for _ in range(2)])]
    batch, got, _, grads = packed_equals_alone(model, encoder, groups, 1)
    copies = (1, 1) if model.shares_prompt else (2, 3)  # Qwen3.5: a copy of the prompt per response
    assert sorted(batch["video_grid_thw"].tolist()) == [[2, 2, 2]] * copies[0] + [[2, 4, 4]] * copies[1]
    assert any("visual" in key for key in grads)  # the tower ran on the videos, its gradients compared

    def rewards_with(**change):
        changed = [{**groups[0], **change}, *groups[1:]]
        with torch.no_grad():
            return model(**collate_groups(changed, pad_token_id=encoder.pad_token_id, row_tokens=10_000,
                                          share_prompt=model.shares_prompt))[:3]

    video = groups[0]["pixel_values_videos"].reshape(2, 16, -1)
    assert (rewards_with(pixel_values_videos=video[::-1].reshape(32, -1).copy()) - got[:3]).abs().max() > 1e-4
    if name == "qwen2_5_vl":
        import numpy as np

        assert (rewards_with(second_per_grid_ts=np.array([2.0], np.float32)) - got[:3]).abs().max() > 1e-4
