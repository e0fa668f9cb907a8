"""Consolidate a training checkpoint into a Hugging Face-style reward checkpoint.

ZeRO-2/3 shards are gathered with DeepSpeed's own `zero_to_fp32` (on CPU, no GPU or
process group needed); LoRA adapters are merged into the backbone; the reward checkpoint
records the held-out score mean/std (used to normalise ensemble members), the run config
and where it came from. The input is this run's own DeepSpeed checkpoint; the output is
safetensors only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mrm_ray.config import RunConfig, to_dict
from mrm_ray.train.checkpoint import DS_TAG


def consolidated_state_dict(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """fp32 weights of the engine's module from a DeepSpeed checkpoint (any ZeRO stage)."""
    path = Path(checkpoint_dir)
    if list((path / DS_TAG).glob("*optim_states.pt")):
        import contextlib
        import io

        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        chatter = io.StringIO()  # zero_to_fp32 prints its progress; it is not the user's business
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            return get_fp32_state_dict_from_zero_checkpoint(str(path), tag=DS_TAG)
    # ZeRO stage 0: plain module weights in the model states file
    state = torch.load(path / DS_TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in state["module"].items()}


def export_checkpoint(checkpoint_dir: str | Path, *, run: RunConfig, metrics: dict, out_dir: str | Path,
                      counts: dict | None = None) -> Path:
    """The reward checkpoint (with its model card, model/card.py) of the run's checkpoint `checkpoint_dir`;
    `metrics` are that checkpoint's (held-out figures, score statistics), `counts` the data mixture's per source."""
    from mrm_ray.model import checkpoints
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.loop import apply_lora

    model_path = checkpoints.resolve(run.model.path, want=checkpoints.BACKBONE)
    model = RewardModel.from_pretrained(model_path, head=run.model.head)
    if run.train.lora is not None:
        model = apply_lora(model, run.train.lora)
    model.load_state_dict(consolidated_state_dict(checkpoint_dir), strict=True)
    if run.train.lora is not None:
        model.backbone = model.backbone.merge_and_unload()
    model.score_mean, model.score_std = float(metrics["score_mean"]), float(metrics["score_std"])
    model.provenance.update({
        "training_checkpoint": metrics.get("checkpoint_dir", str(checkpoint_dir)), "step": metrics.get("step"),
        "held_out_accuracy": metrics.get("held_out_accuracy"), "run_config": to_dict(run),
        "data_counts": counts or {},
        "held_out": {"pairs": metrics.get("held_out_pairs"), "loss": metrics.get("held_out_loss"),
                     "per_source": {k.split("/", 1)[1]: v for k, v in metrics.items()
                                    if k.startswith("held_out_accuracy/")}}})
    return model.save_pretrained(out_dir, processor=load_processor(model_path))
