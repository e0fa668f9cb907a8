"""The memory plan: published parameter counts and how ZeRO settings move memory."""

import dataclasses

import pytest

from mrm_ray.config import LoraConfig, TrainConfig
from mrm_ray.model.published import PUBLISHED
from mrm_ray.train.plan import GIB, estimate, text_params, vision_params


@pytest.mark.parametrize("name,billions", [("qwen2_5_vl_3b", 3.75), ("qwen2_5_vl_7b", 8.29),
                                           ("qwen2_5_vl_32b", 33.45), ("qwen2_5_vl_72b", 73.41)])
def test_parameter_counts_match_the_published_models(name, billions):
    arch = PUBLISHED[name]
    lm_head = 0 if arch["tied"] else arch["vocab"] * arch["hidden"]  # the published count includes it
    total = text_params(arch) + vision_params(arch["hidden"]) + lm_head
    assert total / 1e9 == pytest.approx(billions, rel=0.02)


def test_zero_stages_and_offload_move_memory():
    arch, base = PUBLISHED["qwen2_5_vl_7b"], TrainConfig(num_workers=8, micro_batch_size=1, global_batch_size=128)
    plans = {s: estimate(arch, dataclasses.replace(base, zero_stage=s), gpus=8, tokens_per_pair=4096,
                         image_tokens=1280) for s in (0, 2, 3)}
    assert plans[0].optimizer == pytest.approx(12 * plans[0].params)
    assert plans[2].optimizer == pytest.approx(12 * plans[2].params / 8)
    assert plans[2].gradients == pytest.approx(plans[0].gradients / 8)
    assert plans[3].weights == pytest.approx(plans[2].weights / 8)
    assert plans[0].total > plans[2].total > plans[3].total
    off = estimate(arch, dataclasses.replace(base, zero_stage=3, offload_optimizer=True, offload_params=True),
                   gpus=8, tokens_per_pair=4096, image_tokens=1280)
    assert off.optimizer == 0 and off.weights == 0 and off.cpu_offload > 0
    lora = estimate(arch, dataclasses.replace(base, zero_stage=2, lora=LoraConfig()), gpus=8, tokens_per_pair=4096,
                    image_tokens=1280)
    assert lora.optimizer < plans[2].optimizer / 50


def test_checkpointing_cuts_activations_and_72b_needs_zero3_on_8_gpus():
    arch = PUBLISHED["qwen2_5_vl_72b"]
    cfg = TrainConfig(num_workers=8, micro_batch_size=1, global_batch_size=128, zero_stage=2)
    full = estimate(arch, cfg, gpus=8, tokens_per_pair=4096, image_tokens=1280)
    ckpt = estimate(arch, dataclasses.replace(cfg, gradient_checkpointing=True), gpus=8, tokens_per_pair=4096,
                    image_tokens=1280)
    assert ckpt.activations < full.activations / 10
    assert full.total > 80 * GIB  # ZeRO-2 replicates 145 GB of bf16 weights on every GPU
