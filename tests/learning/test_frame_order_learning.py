"""The tiny reward model learns a preference that only a video's frame order shows, on the route this machine
takes (the frames route: each frame an image, in order; model/inputs.py), and on the family's own video path
where its video processor loads.

Each pair is a 4-frame video of a square crossing the picture and asks which way it moves; chosen names the way
the frames run, rejected the other. Going the other way only reverses the same frames, and the prompt is the same
for every pair, so only the order tells. That is checked on the data below, with the generator's own seeds, in place
of a second training run with each video's frames shuffled (it reached 0.49, and took 80 s of CI).

Held-out accuracy on AMD EPYC (2 cores), Qwen2.5-VL, 84x84 frames, 800 steps at 3e-4, warm-up 60, gradient
clipping 0.3: 1.0 on seeds 0-3 (the issue aims at >= 0.80). Without clipping (600 steps at 3e-4 or 5e-4) seed 1
stayed at 0.525. Shuffling each video's frames at this schedule: 0.49.

The family's own video path (the video route, run where its video processor loads: here, in a separate venv with
torch 2.14.1 and torchvision 0.29.1) at 2e-4: 1.0 on seeds 0-2; at 3e-4, 1.0 on seeds 0 and 2 and 0.525 on 1.
"""

import dataclasses
import random

import pytest

from mrm_ray.config import LocalTrainConfig
from mrm_ray.data.synthetic import frame_order_pair, image_grounded_pairs
from mrm_ray.model.inputs import PairEncoder
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.train.local import pairwise_accuracy, train_pairs

CONFIG = LocalTrainConfig(steps=800, batch_size=16, lr=3e-4, warmup_steps=60, max_grad_norm=0.3, seed=0)
# the video route: 4 frames are 2 temporal patches of 6 x 6 (36 tokens); at 3e-4 seed 1 stayed at 0.525
CONFIGS = {"frames": CONFIG, "video": dataclasses.replace(CONFIG, lr=2e-4)}


def _encode(encoder, n, seed):
    return [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"], videos=r["videos"])
            for r in image_grounded_pairs(n, seed=seed, task="frame_order", size=84)]


def _has_video_processor(processor) -> bool:
    return getattr(processor, "video_processor", None) is not None


@pytest.mark.parametrize("seed", range(20))
def test_only_the_frames_order_tells_the_way(seed):
    """The pair drawn going right and the one drawn going left from the same generator state: the same prompt,
    the same frames reversed, the answers swapped."""
    right, left = (frame_order_pair(random.Random(seed), size=84, right=way) for way in (True, False))
    assert right["prompt"] == left["prompt"] and right["images"] == left["images"] == []
    assert left["videos"][0] == right["videos"][0][::-1] and len(set(right["videos"][0])) == 4
    assert (left["chosen"], left["rejected"]) == (right["rejected"], right["chosen"])


@pytest.mark.slow
@pytest.mark.parametrize("route", ["frames", "video"])
def test_learns_which_way_the_frames_run(tiny_checkpoint, processor, route):
    if route == "video" and not _has_video_processor(processor):
        pytest.skip("the video route needs the family's video processor (torchvision, absent here); this machine "
                    "takes the frames route")
    encoder = PairEncoder(processor, video_route=route)
    model = RewardModel.from_pretrained(tiny_checkpoint)
    train_pairs(model, _encode(encoder, 512, 1), pad_token_id=encoder.pad_token_id, config=CONFIGS[route])
    accuracy = pairwise_accuracy(model, encoder, _encode(encoder, 200, 2))
    print(f"frame order ({route} route) held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.85, f"held-out accuracy {accuracy:.3f}"
