"""Training throughput: the full path vs a bare PyTorch loop, same model, data and threads.

    python benchmarks/bench_train.py [--pairs 192] [--steps 40] [--batch 4]

Full path: generated pairs -> Ray Data (checked, then encoded by an actor streaming into
the trainer) -> Ray Train (1 worker, 1 CPU) -> DeepSpeed (ZeRO-0 by default, fp32) -> the packed pair
forward, as `jobs/train.py` runs it; pairs/s over training steps, evaluation and
checkpoints excluded, first step excluded. Bare loop: one process, the same model and
batches collated in advance, plain AdamW, one thread. The model is the tiny checkpoint
widened so that compute dominates (text 256 x 4 layers, vision 128 x 2 blocks). Goal: >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def wide_checkpoint(out: Path) -> Path:
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mrm_ray.model.tiny import CHAT_TEMPLATE, build_tiny_checkpoint, image_processor_config, tiny_config, \
        train_tokenizer

    tokenizer = train_tokenizer(0)
    config = tiny_config(tokenizer, text_hidden=256, vision_hidden=128)
    config.text_config.num_hidden_layers = 4
    config.text_config.layer_types = ["full_attention"] * 4
    config.text_config.intermediate_size = 1024
    config.text_config.num_attention_heads = 16  # head_dim 16 keeps the tiny M-RoPE sections (2, 3, 3)
    config.text_config.num_key_value_heads = 4
    torch.manual_seed(0)
    build_tiny_checkpoint(out, seed=0)  # tokenizer, processor files
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor_config()))
    return out


def bare_loop(model_path: Path, pairs: list[dict], pad: int, *, batch: int, steps: int) -> float:
    from mrm_ray.model.loss import bradley_terry_loss
    from mrm_ray.model.packing import collate_packed
    from mrm_ray.model.reward_model import RewardModel

    torch.set_num_threads(1)
    model = RewardModel.from_pretrained(model_path).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batches = [collate_packed(pairs[(i * batch) % len(pairs):][:batch], pad_token_id=pad) for i in range(steps + 1)]
    start = 0.0
    for i, b in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        chosen, rejected = model.forward_pairs(b)
        loss = bradley_terry_loss(chosen, rejected).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def bench_run(model_path: Path, out: Path, *, pairs: int, batch: int, steps: int, zero_stage: int):
    """The full path's run: the tiny preset on `pairs` generated pairs, one worker."""
    from mrm_ray.config import load_run_config

    return load_run_config("tiny", [
        f"output_dir={out}", "name=bench", f"model.path={model_path}", f"synthetic.pairs={pairs}",
        "held_out_fraction=0.05", "cache_encoded=false", "preprocess_cpus=0.5", "train.num_workers=1",
        "train.cpus_per_worker=1", f"train.zero_stage={zero_stage}", f"train.micro_batch_size={batch}",
        f"train.global_batch_size={batch}", f"train.max_steps={steps}", f"train.eval_every={steps}"])


def full_path(run) -> float:
    from mrm_ray.ray_session import connect
    from mrm_ray.train.launch import run_training

    connect(num_cpus=2)
    summary = run_training(run)
    return json.loads((Path(summary.run_dir) / "summary.json").read_text())["metrics"]["train_pairs_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=192)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--zero-stage", type=int, default=0, help="0: one worker has nothing to partition")
    args = parser.parse_args()
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.data.synthetic import image_grounded_pairs
    from mrm_ray.model.processor import load_processor

    with tempfile.TemporaryDirectory() as tmp:
        model_path = wide_checkpoint(Path(tmp) / "wide")
        run = bench_run(model_path, Path(tmp) / "runs", pairs=args.pairs, batch=args.batch, steps=args.steps,
                        zero_stage=args.zero_stage)
        encoder = PairEncoder(load_processor(model_path))
        s = run.synthetic  # the bare loop's pairs drawn as the full path's are (the preset's image size: 84 px)
        pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"])
                 for r in image_grounded_pairs(s.pairs, seed=s.seed, task=s.task, size=s.image_size)]
        bare = bare_loop(model_path, pairs, encoder.pad_token_id, batch=args.batch, steps=args.steps)
        full = full_path(run)
    print(f"model: tiny tokenizer, text 256 x 4 layers, vision 128 x 2 blocks; batch {args.batch} pairs of "
          f"{s.image_size} px images, {args.steps} steps, 1 thread each")
    print(f"{'bare PyTorch loop (pre-collated batches)':<58} {bare:>8.2f} pairs/s")
    print(f"{f'Ray Data -> Ray Train -> DeepSpeed ZeRO-{args.zero_stage} (1 worker)':<58} {full:>8.2f} pairs/s")
    print(f"ratio full / bare: {full / bare:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
