"""Interchange with Hugging Face `*ForSequenceClassification` reward models (a linear `score` head).

Off-the-shelf reward models (Skywork-Reward, many others) ship as a backbone in its family's
checkpoint layout (`model.` for the text LMs) and `score.weight` (1, hidden), no bias, the
reward read at the last non-pad token; vLLM's pooling runner serves vision-language reward
models in the same layout (`Qwen2_5_VLForSequenceClassification`). `RewardModel.from_pretrained`
reads one (model/checkpoints.py tells it apart) as a `RewardModel` with a linear head
(`head.num_layers: 1`, `score_head` here), so it can be scored, evaluated, served in an ensemble
or trained further; `export_seq_cls` writes a reward model whose head is linear in that layout.

transformers itself has the class for the text-only families and Qwen3.5; for Qwen2-VL,
Qwen2.5-VL and Qwen3-VL the layout is vLLM's (the architecture name its adapter registers
over the same `ForConditionalGeneration` weights), which transformers does not load.

The score has no bias; a linear head's bias (a constant shift of every reward, which no
comparison sees) is kept in `config.json` as `mrm_ray_score_bias` so that loading the export
back gives exactly the rewards it was made from.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SCORE_BIAS = "mrm_ray_score_bias"
SCORE_STATS = "mrm_ray_score_stats"  # {"mean": ..., "std": ...}: what ensembles normalise with


def score_weight(path: str | os.PathLike) -> torch.Tensor:
    """`score.weight` (1, hidden) of a sequence classifier, read alone from its (sharded) safetensors."""
    import json

    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    file = path / (json.loads(index.read_text())["weight_map"]["score.weight"] if index.is_file()
                   else "model.safetensors")
    with safe_open(file, framework="pt") as f:
        if "score.weight" not in f.keys():
            raise ValueError(f"{path}: a sequence-classification checkpoint without `score.weight`")
        return f.get_tensor("score.weight")


def score_head(path: str | os.PathLike) -> tuple[torch.Tensor, float]:
    """(score weight (hidden,), bias) of a sequence classifier: what its linear reward head holds."""
    from transformers import AutoConfig

    path = Path(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    if getattr(config, "num_labels", 1) != 1:
        raise ValueError(f"{path}: a reward model has one score; this classifier has {config.num_labels} labels")
    return score_weight(path).reshape(-1), float(getattr(config, SCORE_BIAS, 0.0))


def export_seq_cls(model, out_dir: str | os.PathLike, *, processor=None) -> Path:
    """Write `model` (a linear head) as the family's `*ForSequenceClassification` checkpoint, atomically."""
    from huggingface_hub import save_torch_state_dict

    from mrm_ray.atomic import atomic_dir
    from mrm_ray.model import families

    if model.head_config.num_layers != 1:
        raise ValueError(f"the reward head has {model.head_config.num_layers} layers: a sequence-classification "
                         "checkpoint holds one linear `score` layer, so an MLP head cannot be written there without "
                         "changing its rewards; export it as a reward checkpoint, or train with head.num_layers=1")
    linear = model.head.mlp[-1]
    config = model.backbone.config.__class__.from_dict(model.backbone.config.to_dict())
    config.architectures = [model.family.seq_cls]
    config.num_labels = 1
    text = families.text_config(config)
    if getattr(text, "pad_token_id", None) is None and processor is not None:
        text.pad_token_id = processor.tokenizer.pad_token_id
    if text is not config:
        config.pad_token_id = text.pad_token_id  # the class reads it from the text config; vLLM from the top
    setattr(config, SCORE_BIAS, float(linear.bias.detach().float().item()))
    setattr(config, SCORE_STATS, {"mean": model.score_mean, "std": model.score_std})
    state = {model.family.saved_name(k): v.detach().contiguous().cpu() for k, v in model.backbone.state_dict().items()}
    dtype = next(iter(state.values())).dtype
    state["score.weight"] = linear.weight.detach().reshape(1, -1).contiguous().cpu().to(dtype)
    with atomic_dir(out_dir) as tmp:
        save_torch_state_dict(state, tmp, max_shard_size="5GB", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
    return Path(out_dir).resolve()
