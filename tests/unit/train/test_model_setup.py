"""The worker's model set-up: frozen vision tower, gradient checkpointing, LoRA, param groups."""

import pytest
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


def test_frozen_vision_stays_and_the_head_steps_at_its_own_rate_under_deepspeed(tiny_checkpoint, encoder,
                                                                                monkeypatch):
    """The worker's own engine (`make_engine`: ZeRO-2 DeepSpeed, here one gloo rank in this process) and
    micro-step, three optimizer steps on image pairs: the vision tower's weights are bit-identical, every
    other trainable weight moved, and the optimizer's head group ran at 10x the backbone's rate each step."""
    import socket

    import deepspeed
    import torch.distributed as dist

    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.pairing import collate_packed
    from mrm_ray.train.loop import _skip_cpu_inference_comm_op, learning_rates, make_engine, train_micro_step

    run = load_run_config("tiny", [f"model.path={tiny_checkpoint}", "train.freeze_vision=true",
                                   "train.head_learning_rate=2.5e-3", "train.num_workers=1",
                                   "train.micro_batch_size=4", "train.global_batch_size=4"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():  # what Ray Train sets on each worker
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", init_method="env://")
    try:
        _skip_cpu_inference_comm_op()
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        engine = make_engine(run, total_steps=3, on_gpu=False)
        assert engine.zero_optimization_stage() == 2
        before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
        pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
                 for r in image_grounded_pairs(12, seed=3)]
        rates = []
        for step in range(3):
            rates.append(learning_rates(engine))
            train_micro_step(engine, collate_packed(pairs[4 * step:4 * step + 4], pad_token_id=encoder.pad_token_id),
                             run.loss)
        after = dict(engine.module.named_parameters())
    finally:
        dist.destroy_process_group()
    moved = {n: not torch.equal(after[n].detach(), before[n]) for n in before}
    assert not any(m for n, m in moved.items() if ".visual." in n)
    # the Bradley-Terry loss sees only r_chosen - r_rejected: the head's output bias gets a gradient of zero up
    # to rounding, which Adam may or may not turn into a step
    assert {n for n, m in moved.items() if not m and ".visual." not in n} <= {"head.mlp.3.bias"}
    assert any(m for n, m in moved.items() if ".language_model." in n) and moved["head.mlp.0.weight"]
    for r in rates:  # DeepSpeed's linear warm-up starts at 0, so compare the ratio where it is defined
        assert r["lr/head"] == pytest.approx(10 * r["lr/backbone"], rel=1e-9, abs=1e-15)
    assert max(r["lr/backbone"] for r in rates) > 0
