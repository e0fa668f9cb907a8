"""build_ds_config: ZeRO stages, offload, precision, accumulation, schedule (pure)."""

import pytest

from mrm_ray.config import TrainConfig
from mrm_ray.train.deepspeed import build_ds_config


def test_accumulation_and_batch_sizes():
    cfg = build_ds_config(TrainConfig(num_workers=8, micro_batch_size=2, global_batch_size=128), total_steps=100,
                          on_gpu=True)
    assert (cfg["train_batch_size"], cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == \
        (128, 2, 8)


@pytest.mark.parametrize("on_gpu,precision,bf16", [(True, "auto", True), (False, "auto", False),
                                                   (False, "bf16", True), (True, "fp32", False)])
def test_precision(on_gpu, precision, bf16):
    cfg = build_ds_config(TrainConfig(precision=precision), total_steps=10, on_gpu=on_gpu)
    assert cfg["bf16"]["enabled"] is bf16 and cfg["fp16"]["enabled"] is False


def test_zero3_with_offload():
    cfg = build_ds_config(TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True), total_steps=10,
                          on_gpu=True)
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu"
    stage2 = build_ds_config(TrainConfig(zero_stage=2), total_steps=10, on_gpu=False)["zero_optimization"]
    assert "offload_param" not in stage2 and "offload_optimizer" not in stage2


def test_schedule_warmup_and_cosine():
    cfg = build_ds_config(TrainConfig(warmup_ratio=0.1, learning_rate=3e-6, min_lr_ratio=0.1), total_steps=200,
                          on_gpu=True)
    sched = cfg["scheduler"]
    assert sched["type"] == "WarmupCosineLR"
    assert sched["params"]["warmup_num_steps"] == 20 and sched["params"]["total_num_steps"] == 200
    assert sched["params"]["cos_min_ratio"] == 0.1
    assert cfg["optimizer"]["params"]["lr"] == 3e-6 and cfg["gradient_clipping"] == 1.0


@pytest.mark.parametrize("on_gpu", [True, False])
def test_torch_adam_needs_no_compiled_op(on_gpu):
    params = build_ds_config(TrainConfig(optimizer_impl="torch"), total_steps=10, on_gpu=on_gpu)["optimizer"]["params"]
    assert params["torch_adam"] is True and params["fused"] is on_gpu
    with pytest.raises(ValueError, match="optimizer_impl"):
        TrainConfig(optimizer_impl="sgd")


def test_auto_optimizer_compiles_only_where_it_pays():
    def params(on_gpu, **kw):
        return build_ds_config(TrainConfig(**kw), total_steps=10, on_gpu=on_gpu)["optimizer"]["params"]

    assert "torch_adam" not in params(True)  # a GPU: DeepSpeed's own fused Adam
    assert "torch_adam" not in params(False, zero_stage=2, offload_optimizer=True)  # DeepSpeed's CPU Adam
    assert params(False)["torch_adam"] is True and params(False)["fused"] is False  # CPU: nothing to build
    assert "torch_adam" not in params(False, optimizer_impl="deepspeed")
