"""The tiny reward model learns a preference that only a video's frame order shows, on the route this machine
takes (the frames route: each frame an image, in order; model/inputs.py).

Each pair is a 4-frame video of a square crossing the picture and asks which way it moves; chosen names the way
the frames run, rejected the other. Every frame set is shown both ways across pairs, so only the order tells.
Shuffling each video's frames (no order to see) must stay near chance.

Held-out accuracy on AMD EPYC (2 cores), Qwen2.5-VL, 84x84 frames, 800 steps at 3e-4, warm-up 60, gradient
clipping 0.3: 1.0 on seeds 0-3 (the issue aims at >= 0.80). Without clipping (600 steps at 3e-4 or 5e-4) seed 1
stayed at 0.525. The shuffled control at this schedule: 0.49.
"""

import pytest

from mrm_ray.config import LocalTrainConfig
from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.inputs import frames_as_images
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.train.local import pairwise_accuracy, train_pairs

pytestmark = pytest.mark.slow

CONFIG = LocalTrainConfig(steps=800, batch_size=16, lr=3e-4, warmup_steps=60, max_grad_norm=0.3, seed=0)


def _encode(encoder, n, seed, shuffled):
    out = []
    for r in image_grounded_pairs(n, seed=seed, task="frame_order", size=84, blank=shuffled):
        prompt, images = frames_as_images(r["prompt"], r["images"], r["videos"])
        out.append(encoder.encode_pair(prompt, images, r["chosen"], r["rejected"]))
    return out


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
def test_learns_which_way_the_frames_run(tiny_checkpoint, encoder, shuffled):
    model = RewardModel.from_pretrained(tiny_checkpoint)
    train_pairs(model, _encode(encoder, 512, 1, shuffled), pad_token_id=encoder.pad_token_id, config=CONFIG)
    accuracy = pairwise_accuracy(model, encoder, _encode(encoder, 200, 2, shuffled))
    print(f"frame order ({'shuffled' if shuffled else 'in order'}) held-out accuracy {accuracy:.3f}")
    if shuffled:
        assert 0.38 <= accuracy <= 0.62, f"held-out accuracy {accuracy:.3f} with no order to see"
    else:
        assert accuracy >= 0.85, f"held-out accuracy {accuracy:.3f}"
