"""How videos reach the model, one route per run (model/inputs.py): the family's own video path where its video
processor loads (torchvision), each video's frames as images in order elsewhere; canonical rows keep videos as
videos so that the run's encoder chooses."""

import random

import numpy as np
import pytest

from helpers.images import noise_png
from helpers.packing import packed_equals_alone
from mrm_ray.data.quarantine import BadRecord
from mrm_ray.data.schema import canonical_pair, to_chat_messages
from mrm_ray.model.inputs import PairEncoder, choose_video_route, frames_as_images, place_videos
from mrm_ray.model.processor import load_processor
from mrm_ray.model.reward_model import RewardModel


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


NO_VIDEO_PROCESSOR = ("torchvision does not import beside this CPU torch, so transformers builds no video "
                      "processor here: the family's own video path is tested where it loads (the packed forward "
                      "with videos is tested here, tests/unit/model/test_families.py)")


def test_the_route_is_chosen_once_for_the_run(processor):
    assert (getattr(processor, "video_processor", None) is not None) == _has_torchvision()
    assert choose_video_route(processor, "frames") == "frames"
    assert choose_video_route(processor, "auto") == ("video" if _has_torchvision() else "frames")
    if not _has_torchvision():
        with pytest.raises(ValueError, match="video_route: video needs the family's video processor.*torchvision"):
            choose_video_route(processor, "video")
    with pytest.raises(ValueError, match="video_route must be one of"):
        choose_video_route(processor, "sometimes")
    assert PairEncoder(processor, video_route="frames").video_route == "frames"


def test_a_video_stays_a_video_on_the_video_route_and_is_its_frames_on_the_frames_route():
    frames = [b"f0", b"f1", b"f2"]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a"}, {"type": "video"},
                                           {"type": "text", "text": "b"}]}]
    kept, images, videos = place_videos(prompt, [b"i0"], [frames], frames=False)
    assert [p["type"] for p in kept[0]["content"]] == ["image", "text", "video", "text"]
    assert images == [b"i0"] and videos == [frames]
    flat, images = frames_as_images(prompt, [b"i0"], [frames])
    assert [p["type"] for p in flat[0]["content"]] == ["image", "text", "image", "image", "image", "text"]
    assert images == [b"i0", *frames]
    # a text prompt: the videos after its leading images, before the text, on either route
    kept, images, videos = place_videos("what moves?", [b"i0"], [frames], frames=False)
    assert [p["type"] for p in kept[0]["content"]] == ["image", "video", "text"] and videos == [frames]


def test_canonical_rows_keep_videos_and_refuse_bad_ones():
    rng = random.Random(0)
    frames = [noise_png(rng, smallest=30, largest=30) for _ in range(3)]
    row = canonical_pair(id="v", source="s", position="f:1", prompt="Which way?", chosen="left", rejected="right",
                         videos=[frames])
    assert row["videos"] == [frames] and row["images"] == []
    assert to_chat_messages(row["prompt"]) == [{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": "Which way?"}]}]
    assert canonical_pair(id="t", source="s", position="f:2", prompt="p", chosen="a", rejected="b")["videos"] == []
    for videos, reason in (([[]], "empty video"), ([frames * 6], "too many frames"),
                           ([frames + [noise_png(rng, smallest=50, largest=50)]], "frames of different sizes"),
                           ([frames, frames], "video mismatch")):
        prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "q"}]}]
        with pytest.raises(BadRecord, match=reason):
            canonical_pair(id="v", source="s", position="f:1", prompt=prompt, chosen="a", rejected="b", videos=videos)


def test_the_frames_route_scores_a_video_as_its_frames(tiny_checkpoint, encoder):
    """On the frames route a video's group is exactly the group of its frames given as images."""
    rng = random.Random(1)
    frames = [noise_png(rng, smallest=40, largest=40) for _ in range(4)]
    frames_encoder = PairEncoder(encoder.processor, video_route="frames")
    got = frames_encoder.encode_group("Which way?", [], ["left", "right"], videos=[frames])
    prompt, images = frames_as_images("Which way?", [], [frames])
    want = encoder.encode_group(prompt, images, ["left", "right"])
    assert got.keys() == want.keys() and "pixel_values_videos" not in got
    for key in ("prompt_ids", "prompt_mm_token_type_ids", "pixel_values", "image_grid_thw"):
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.skipif(not _has_torchvision(), reason=NO_VIDEO_PROCESSOR)
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_the_video_route_is_the_processors_own_encoding_and_packs_exactly(family_checkpoint, family):
    """Where the video processor loads: 4 frames are 2 temporal patches, each `<|video_pad|>` a merged patch,
    Qwen2.5-VL's seconds per patch 1.0 (2 frames at 2 a second), and packed with another group, the video's group
    equals each response alone (rewards and gradients)."""
    path = family_checkpoint(family)
    processor = load_processor(path)
    video_encoder = PairEncoder(processor, video_route="video")
    rng = random.Random(2)
    frames = [noise_png(rng, smallest=56, largest=56) for _ in range(4)]
    group = video_encoder.encode_group("Which way?", [], ["left", "right", "up"], videos=[frames])
    assert group["video_grid_thw"].shape == (1, 3) and group["video_grid_thw"][0, 0] == 2
    assert (group["prompt_mm_token_type_ids"] == 2).sum() == group["video_grid_thw"].prod() // 4
    if family == "qwen2_5_vl":
        assert group["second_per_grid_ts"].tolist() == [1.0]
    model = RewardModel.from_pretrained(path).eval()
    text = video_encoder.encode_group("Describe it.", [noise_png(rng)], ["a cat", "a dog"])
    _, _, _, grads = packed_equals_alone(model, video_encoder, [group, text], 0)  # rewards and gradients
    assert any("visual" in key for key in grads)
