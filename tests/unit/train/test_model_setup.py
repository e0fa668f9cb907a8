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


@pytest.fixture(scope="module")
def one_rank():
    """A gloo process group of one rank in this process, with the environment Ray Train sets on a worker;
    one for the module (DeepSpeed caches the world group it first sees)."""
    import socket

    import deepspeed
    import torch.distributed as dist

    from mrm_ray.train.loop import _skip_cpu_inference_comm_op

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
                           "WORLD_SIZE": "1"}.items():
            env.setenv(key, value)
        dist.init_process_group("gloo", init_method="env://")
        try:
            _skip_cpu_inference_comm_op()
            deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
            yield
        finally:
            dist.destroy_process_group()


def _steps(run, encoder, steps: int):
    """The worker's own engine (`make_engine`) after `steps` of the worker's micro-steps on image pairs: the
    engine, the weights before, and the learning rates of each step."""
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.packing import collate_packed
    from mrm_ray.train.loop import learning_rates, make_engine, train_micro_step

    engine = make_engine(run, total_steps=steps, on_gpu=False)
    assert engine.zero_optimization_stage() == 2
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(4 * steps, seed=3)]
    rates = []
    for step in range(steps):
        rates.append(learning_rates(engine))
        train_micro_step(engine, collate_packed(pairs[4 * step:4 * step + 4], pad_token_id=encoder.pad_token_id),
                         run.loss)
    return engine, before, rates


# the Bradley-Terry loss sees only r_chosen - r_rejected: the head's output bias gets a gradient of zero up to
# rounding, which Adam may or may not turn into a step
OUTPUT_BIAS = "head.mlp.3.bias"
ONE_RANK = ["train.num_workers=1", "train.micro_batch_size=4", "train.global_batch_size=4"]


def test_frozen_vision_stays_and_the_head_steps_at_its_own_rate_under_deepspeed(tiny_checkpoint, encoder,
                                                                                one_rank):
    """The worker's own engine (ZeRO-2 DeepSpeed, one gloo rank in this process) and micro-step, three
    optimizer steps on image pairs: the vision tower's weights are bit-identical, every other trainable weight
    moved, and the optimizer's head group ran at 10x the backbone's rate each step."""
    run = load_run_config("tiny", [f"model.path={tiny_checkpoint}", "train.freeze_vision=true",
                                   "train.head_learning_rate=2.5e-3", *ONE_RANK])
    engine, before, rates = _steps(run, encoder, 3)
    after = dict(engine.module.named_parameters())
    moved = {n: not torch.equal(after[n].detach(), before[n]) for n in before}
    assert not any(m for n, m in moved.items() if ".visual." in n)
    assert {n for n, m in moved.items() if not m and ".visual." not in n} <= {OUTPUT_BIAS}
    assert any(m for n, m in moved.items() if ".language_model." in n) and moved["head.mlp.0.weight"]
    for r in rates:  # DeepSpeed's linear warm-up starts at 0, so compare the ratio where it is defined
        assert r["lr/head"] == pytest.approx(10 * r["lr/backbone"], rel=1e-9, abs=1e-15)
    assert max(r["lr/backbone"] for r in rates) > 0


def test_lora_moves_only_adapters_and_head_and_exports_merged(tiny_checkpoint, encoder, one_rank, tmp_path):
    """LoRA on the worker's engine: after four steps the adapters and the head moved and no base weight did;
    the DeepSpeed checkpoint the worker saves exports (the run's own export) as a plain model, LoRA merged
    into the weights, that scores as the adapted one."""
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.packing import collate_packed
    from mrm_ray.model.reward_model import RewardModel
    from mrm_ray.train.checkpoint import DS_TAG
    from mrm_ray.train.export import export_checkpoint

    run = load_run_config("tiny", [f"model.path={tiny_checkpoint}", "train.lora.rank=8",
                                   "train.learning_rate=2e-3", *ONE_RANK])
    engine, before, _ = _steps(run, encoder, 4)  # LoRA B starts at zero: A moves from the third step on
    after = {n: p.detach() for n, p in engine.module.named_parameters()}
    moved = {n for n in before if not torch.equal(after[n], before[n])}
    adapted = {n for n in before if "lora_" in n or n.startswith("head.")}
    assert moved - {OUTPUT_BIAS} == adapted - {OUTPUT_BIAS}
    frozen = {n: b for n, b in engine.module.state_dict().items() if "lora_" not in n and not n.startswith("head.")}
    base = RewardModel.from_pretrained(tiny_checkpoint).state_dict()
    assert all(torch.equal(v, base[n.replace("base_model.model.", "").replace(".base_layer", "")])
               for n, v in frozen.items())  # the base weights, bit for bit
    engine.save_checkpoint(str(tmp_path / "checkpoint"), tag=DS_TAG)

    out = export_checkpoint(tmp_path / "checkpoint", run=run, metrics={"score_mean": 0.0, "score_std": 1.0},
                            out_dir=tmp_path / "exported")
    merged = RewardModel.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    q_proj = "backbone.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q_proj], base[q_proj])  # the adapters are in the weights
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(8, seed=5)]
    batch = collate_packed(pairs, pad_token_id=encoder.pad_token_id)
    with torch.no_grad():
        a, b = engine.module.eval().forward_pairs(batch), merged.forward_pairs(batch)
    torch.testing.assert_close(a[0], b[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(a[1], b[1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5", "qwen2", "qwen3", "qwen3_vl_moe", "qwen3_5_moe"])
def test_every_family_trains_on_the_workers_engine(family, family_checkpoint, one_rank):
    """The worker's ZeRO-2 engine and collate on each family's tiny checkpoint (its image task, or the text task
    for a text-only LM): three optimizer steps move every trainable weight; LoRA finds its projections; a
    frozen vision tower (none in a text LM) stays; every expert of a mixture-of-experts backbone and its router
    move. Qwen3.5's batches (and its MoE sibling's) hold one response per row."""
    from mrm_ray.data.collate import PairCollate
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.train.loop import make_engine, train_micro_step

    path = family_checkpoint(family)
    encoder = PairEncoder(load_processor(path))
    vision = encoder.processor.image_processor is not None
    run = load_run_config("tiny", [f"model.path={path}", "train.freeze_vision=true", "train.learning_rate=1e-3",
                                   *ONE_RANK])
    engine = make_engine(run, total_steps=3, on_gpu=False)
    before = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
             for r in image_grounded_pairs(12, seed=3, task="colour" if vision else "colour_text", size=56)]
    collate = PairCollate(pad_token_id=encoder.pad_token_id, share_prompt=engine.module.shares_prompt)
    for step in range(3):
        batch = collate.pairs(pairs[4 * step:4 * step + 4])
        assert batch["input_ids"].shape[0] == (8 if family.startswith("qwen3_5") else 4)
        train_micro_step(engine, batch, run.loss)
    after = dict(engine.module.named_parameters())
    moved = {n: not torch.equal(after[n].detach(), before[n]) for n in before}
    assert {n for n, m in moved.items() if not m and ".visual." not in n} <= {OUTPUT_BIAS}
    assert not any(m for n, m in moved.items() if ".visual." in n) and any(".visual." in n for n in moved) == vision
    _, lora = _model(path, "train.lora.rank=4")
    assert any("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
