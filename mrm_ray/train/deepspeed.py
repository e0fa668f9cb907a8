"""The DeepSpeed config for a TrainConfig (a pure function, unit-tested).

ZeRO stage 0/2/3 with optional optimizer and parameter offload to CPU, bf16 on GPU and
fp32 on CPU, DeepSpeed's Adam or torch's, gradient accumulation from global and micro batch sizes, clipping, AdamW
with a separate head learning rate (as parameter groups), and cosine decay after a linear
warm-up (DeepSpeed's WarmupCosineLR scales every group's own rate).
"""

from __future__ import annotations

from mrm_ray.config import TrainConfig


def use_bf16(train: TrainConfig, *, on_gpu: bool) -> bool:
    return train.precision == "bf16" or (train.precision == "auto" and on_gpu)


def optimizer_impl(train: TrainConfig, *, on_gpu: bool) -> str:
    """`auto`: DeepSpeed's fused Adam where it is worth its build (a GPU, or CPU offload), else torch's AdamW."""
    if train.optimizer_impl != "auto":
        return train.optimizer_impl
    return "deepspeed" if on_gpu or train.offload_optimizer else "torch"


def build_ds_config(train: TrainConfig, *, total_steps: int, on_gpu: bool) -> dict:
    zero: dict = {"stage": train.zero_stage}
    if train.zero_stage >= 1:
        zero.update(overlap_comm=on_gpu, contiguous_gradients=True, reduce_bucket_size=5e7)
    if train.offload_optimizer and train.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if train.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False, stage3_param_persistence_threshold=1e4,
                    stage3_prefetch_bucket_size=5e7)
        if train.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    adam = {"lr": train.learning_rate, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": train.weight_decay}
    if optimizer_impl(train, on_gpu=on_gpu) == "torch":  # torch.optim.AdamW, fused kernel on GPU: nothing to compile
        adam.update(torch_adam=True, fused=on_gpu)
    warmup = max(1, int(round(train.warmup_ratio * total_steps))) if train.warmup_ratio > 0 else 0
    return {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": train.accumulation_steps,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(train, on_gpu=on_gpu)},
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": adam},
        "scheduler": {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(total_steps, warmup + 1), "warmup_num_steps": warmup,
            "warmup_min_ratio": 0.0, "cos_min_ratio": train.min_lr_ratio, "warmup_type": "linear"}},
        "steps_per_print": 10**9,  # progress is ours (driver line, TensorBoard)
        "wall_clock_breakdown": False,
    }
