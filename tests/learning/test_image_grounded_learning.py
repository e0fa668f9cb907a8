"""The tiny reward model learns a preference it can only see in the image.

Pairs ask the colour of a drawn shape; chosen names the true colour, rejected another.
Trained in-process with fixed seeds, the model must reach >= 90% held-out accuracy, while
the same model trained on the same pairs with blank images must stay near chance.
"""

import pytest

from mrm_ray.data.synthetic import image_grounded_pairs
from mrm_ray.model.reward_model import RewardModel
from mrm_ray.config import LocalTrainConfig
from mrm_ray.train.local import pairwise_accuracy, train_pairs

pytestmark = pytest.mark.slow

CONFIG = LocalTrainConfig(steps=400, batch_size=16, lr=5e-4, warmup_steps=20, seed=0)  # 0.97 here at 400
IMAGE_SIZE = 84  # as the tiny training default draws them (9 image tokens a pair)


def _encode(encoder, n, seed, blank):
    return [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
            for r in image_grounded_pairs(n, seed=seed, blank=blank, size=IMAGE_SIZE)]


def _train_and_eval(tiny_checkpoint, encoder, *, blank):
    train, held_out = _encode(encoder, 512, 1, blank), _encode(encoder, 400, 2, blank)
    model = RewardModel.from_pretrained(tiny_checkpoint)
    history = train_pairs(model, train, pad_token_id=encoder.pad_token_id, config=CONFIG)
    return pairwise_accuracy(model, encoder, held_out), history


def test_learns_colour_from_the_image(tiny_checkpoint, encoder):
    accuracy, history = _train_and_eval(tiny_checkpoint, encoder, blank=False)
    print(f"image-grounded held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.90, f"held-out accuracy {accuracy:.3f}"
    assert history[-1]["loss"] < history[0]["loss"]


def test_blank_images_stay_near_chance(tiny_checkpoint, encoder):
    accuracy, _ = _train_and_eval(tiny_checkpoint, encoder, blank=True)
    print(f"blank-image held-out accuracy {accuracy:.3f}")
    assert 0.38 <= accuracy <= 0.62, f"held-out accuracy {accuracy:.3f} with no visual signal"


# Each other family's tiny checkpoint learns its preference: the image-only one for the vision-language
# families, the text-only one (the colour is stated in the prompt) for the text LMs. Measured here: Qwen2-VL 1.0
# at 300 steps (0.92 at 250), Qwen3-VL 1.0 at 250, Qwen2 and Qwen3 1.0 at 150, Qwen3.5 0.97 at 150 (one response
# per row; its linear-attention layers run on transformers' torch fallback here, so its schedule is short).
TEXT_CONFIG = LocalTrainConfig(steps=150, batch_size=16, lr=3e-3, warmup_steps=10, seed=0)
FAMILY_RUNS = {"qwen2_vl": ("colour", LocalTrainConfig(steps=300, batch_size=16, lr=7e-4, warmup_steps=20, seed=0)),
               "qwen3_vl": ("colour", LocalTrainConfig(steps=250, batch_size=16, lr=8e-4, warmup_steps=20, seed=0)),
               "qwen3_5": ("colour", LocalTrainConfig(steps=150, batch_size=16, lr=1e-3, warmup_steps=20, seed=0)),
               "qwen2": ("colour_text", TEXT_CONFIG), "qwen3": ("colour_text", TEXT_CONFIG)}


@pytest.mark.parametrize("family", sorted(FAMILY_RUNS))
def test_every_family_learns_what_only_its_input_shows(family, family_checkpoint):
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor

    task, config = FAMILY_RUNS[family]
    path = family_checkpoint(family)
    encoder = PairEncoder(load_processor(path))

    def encode(n, seed):
        return [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
                for r in image_grounded_pairs(n, seed=seed, task=task, size=IMAGE_SIZE)]

    model = RewardModel.from_pretrained(path)
    history = train_pairs(model, encode(512, 1), pad_token_id=encoder.pad_token_id, config=config)
    accuracy = pairwise_accuracy(model, encoder, encode(200, 2))
    print(f"{family} ({task}) held-out accuracy {accuracy:.3f}")
    assert accuracy >= 0.90, f"{family}: held-out accuracy {accuracy:.3f}"
    assert history[-1]["loss"] < history[0]["loss"]
