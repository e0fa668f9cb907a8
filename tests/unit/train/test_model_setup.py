"""The worker's model set-up: frozen vision tower, gradient checkpointing, LoRA, param groups."""

import torch

from mrm_ray.config import load_run_config
from mrm_ray.train.deepspeed import build_ds_config
from mrm_ray.train.loop import build_model, param_groups, split_rewards


def _model(tiny_checkpoint, *overrides):
    run = load_run_config(None, [f"model.path={tiny_checkpoint}", *overrides])
    return run, build_model(run, ds_config=build_ds_config(run.train, total_steps=10, on_gpu=False))


def test_freeze_vision_and_head_learning_rate(tiny_checkpoint):
    run, model = _model(tiny_checkpoint, "train.freeze_vision=true", "train.head_learning_rate=1e-3",
                        "train.gradient_checkpointing=true")
    assert not any(p.requires_grad for p in model.backbone.visual.parameters())
    assert model.backbone.language_model.gradient_checkpointing
    groups = {g["name"]: g for g in param_groups(model, run.train)}
    assert groups["head"]["lr"] == 1e-3 and groups["backbone"]["lr"] == run.train.learning_rate
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == sum(p.numel() for g in groups.values() for p in g["params"])


def test_lora_trains_adapters_and_the_whole_head(tiny_checkpoint):
    run, model = _model(tiny_checkpoint, "train.lora.rank=4")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert {n for n, _ in model.head.named_parameters()} <= {n.removeprefix("head.") for n in trainable}
    assert not any("visual" in n for n in trainable)  # adapters only on the language model


def test_split_rewards_handles_both_layouts():
    c, r = split_rewards((torch.tensor([1.0]), torch.tensor([2.0])))
    assert (c.item(), r.item()) == (1.0, 2.0)
    c, r = split_rewards(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert c.tolist() == [1.0, 2.0] and r.tolist() == [3.0, 4.0]


def test_random_init_builds_the_architecture_without_weights(tiny_checkpoint, tmp_path):
    import shutil

    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", config_only)  # no weights, no tokenizer
    _, loaded = _model(tiny_checkpoint)
    _, random = _model(config_only, "model.random_init=true")
    shapes = {n: p.shape for n, p in loaded.named_parameters()}
    assert {n: p.shape for n, p in random.named_parameters()} == shapes
    loaded_params = dict(loaded.named_parameters())
    matrices = [n for n, p in random.named_parameters() if p.dim() >= 2 and not n.startswith("head.")]
    assert matrices and all(not torch.equal(random.get_parameter(n), loaded_params[n]) for n in matrices)
    assert random.provenance["base_model"].endswith("(random init)")
