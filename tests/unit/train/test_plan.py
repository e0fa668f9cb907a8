"""The memory plan: published parameter counts and how ZeRO settings move memory."""

import dataclasses

import pytest

from mrm_ray.config import LoraConfig, TrainConfig
from mrm_ray.model.families import published_architecture
from mrm_ray.model.published import PUBLISHED, published_config
from mrm_ray.train.plan import GIB, architecture, estimate


@pytest.fixture(scope="module")
def arches():
    return {}


def _arch(arches, name):
    if name not in arches:
        arches[name] = architecture(published_config(name))
    return arches[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_models(arches, name):
    """The module built on the meta device from our config holds the model card's parameters (LM head included):
    a wrong width, depth, head count or vision tower in the config would move it (Qwen3.5: the size its name
    gives, as its cards' exact totals were not at hand)."""
    arch, published = _arch(arches, name), published_architecture(name)[1]
    total = (arch.params + arch.lm_head) / 1e9
    assert total == pytest.approx(published.billions, rel=0.06 if published.nominal else 0.01)
    assert arch.vision_layers == published.vision["depth"] and arch.hidden == published.text["hidden_size"]


def test_zero_stages_and_offload_move_memory(arches):
    arch, base = _arch(arches, "qwen2_5_vl_7b"), TrainConfig(num_workers=8, micro_batch_size=1, global_batch_size=128)
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


def test_checkpointing_cuts_activations_and_72b_needs_zero3_on_8_gpus(arches):
    arch = _arch(arches, "qwen2_5_vl_72b")
    cfg = TrainConfig(num_workers=8, micro_batch_size=1, global_batch_size=128, zero_stage=2)
    full = estimate(arch, cfg, gpus=8, tokens_per_pair=4096, image_tokens=1280)
    ckpt = estimate(arch, dataclasses.replace(cfg, gradient_checkpointing=True), gpus=8, tokens_per_pair=4096,
                    image_tokens=1280)
    assert ckpt.activations < full.activations / 10
    assert full.total > 80 * GIB  # ZeRO-2 replicates 145 GB of bf16 weights on every GPU


def test_a_text_only_architecture_has_no_vision_activations(family_checkpoint):
    from transformers import AutoConfig

    arch = architecture(AutoConfig.from_pretrained(family_checkpoint("qwen3")))
    assert arch.vision_layers == 0 and arch.lm_head == 0 and arch.params > 0
    plan = estimate(arch, TrainConfig(num_workers=1, micro_batch_size=2, global_batch_size=2), gpus=1,
                    tokens_per_pair=100, image_tokens=1280)
    assert plan.activations == 34 * 200 * arch.hidden * arch.layers


@pytest.mark.parametrize("name, nominal_active", [("qwen3_vl_30b_a3b", 3), ("qwen3_vl_235b_a22b", 22),
                                                  ("qwen3_5_35b_a3b", 3)])
def test_a_mixture_of_experts_counts_every_expert_and_the_share_a_token_runs(arches, name, nominal_active):
    """Total: every expert (the exact weight-index counts for Qwen3-VL: 31,070,754,032 and 235,670,022,896 with
    the LM head); active: the routed k of E experts and everything else, near the size the name gives (it counts
    the vision tower, which the name's figure leaves out)."""
    from mrm_ray.train.plan import format_plan

    arch = _arch(arches, name)
    text = published_architecture(name)[1].text
    assert arch.active < arch.params
    assert arch.active / 1e9 == pytest.approx(nominal_active, rel=0.25)
    # what a token skips is exactly the unrouted experts: (E - k) experts of 3 hidden x moe_intermediate
    # projections (gate, up, down) in every layer
    skipped = (text["num_experts"] - text["num_experts_per_tok"]) * 3 * text["hidden_size"] \
        * text["moe_intermediate_size"] * text["num_hidden_layers"]
    assert arch.params - arch.active == skipped
    cfg = TrainConfig(num_workers=8, micro_batch_size=1, global_batch_size=128, zero_stage=3)
    plan = estimate(arch, cfg, gpus=8, tokens_per_pair=4096, image_tokens=1280)
    assert plan.params == arch.params and plan.active == arch.active
    assert f"({arch.active / 1e9:.2f}B active per token)" in format_plan(name, plan, gpus=8, gpu_mem_gib=80, train=cfg)
    dense = _arch(arches, "qwen3_vl_8b")
    assert dense.active == dense.params
    if name in EXACT_TOTALS:
        assert arch.params + arch.lm_head == EXACT_TOTALS[name]


# totals counted from the published checkpoints' weight index (safetensors index metadata), LM head included
EXACT_TOTALS = {"qwen3_vl_30b_a3b": 31_070_754_032, "qwen3_vl_235b_a22b": 235_670_022_896}
