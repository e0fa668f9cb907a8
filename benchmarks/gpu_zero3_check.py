"""GPU check: a full-size Qwen2.5-VL reward model, bf16, ZeRO-3, packed pair steps.

Builds the published Qwen2.5-VL-3B architecture with random weights (no download), wraps it
with the training job's own `make_engine` (the run's DeepSpeed config, the model partitioned
at construction under ZeRO-3) and trains a few optimizer steps of packed image+text pairs
with the job's `train_micro_step`. Prints peak GPU memory and pairs/s next to the
`mrm-ray plan` estimate for the same shapes. One process and one GPU, no Ray: the same
worker code minus `ray.train`'s data shard and reporting.

    python benchmarks/gpu_zero3_check.py --out results.json              # on a GPU
    DS_ACCELERATOR=cpu python benchmarks/gpu_zero3_check.py --config-dir TINY_CKPT --device cpu ...

Shapes: one image of --image-side px (a 644 px square = 529 image tokens) with a short
question, chosen and rejected answers of --response-tokens each (about 1.1k packed tokens).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_pairs(config, n: int, *, image_side: int, prompt_tokens: int, response_tokens: int,
                    seed: int = 0) -> list[dict]:
    """Encoded pairs shaped like the processor's output, with the config's own token ids."""
    rng = np.random.default_rng(seed)
    v = config.vision_config
    side = image_side // v.patch_size // v.spatial_merge_size * v.spatial_merge_size
    grid = np.array([[1, side, side]], dtype=np.int64)
    n_patches = side * side
    image_tokens = n_patches // v.spatial_merge_size ** 2
    specials = [config.image_token_id, config.vision_start_token_id, config.text_config.bos_token_id,
                config.text_config.eos_token_id]
    text_vocab = min(t for t in specials if t is not None)  # ordinary tokens sit below the special ones

    def text(k: int) -> np.ndarray:
        return rng.integers(0, text_vocab, size=k, dtype=np.int64)

    end = np.array([config.text_config.eos_token_id], dtype=np.int64)
    pairs = []
    for _ in range(n):
        ids = np.concatenate([text(8), [config.vision_start_token_id], np.full(image_tokens, config.image_token_id),
                              [config.vision_end_token_id], text(prompt_tokens)]).astype(np.int64)
        pairs.append({
            "prompt_ids": ids,
            "prompt_mm_token_type_ids": (ids == config.image_token_id).astype(np.int64),
            "pixel_values": rng.standard_normal((n_patches, 3 * v.temporal_patch_size * v.patch_size ** 2),
                                                dtype=np.float32),
            "image_grid_thw": grid,
            "chosen_ids": np.concatenate([text(response_tokens - 1), end]),
            "rejected_ids": np.concatenate([text(response_tokens - 1), end]),
        })
    return pairs


def profile_step(on_gpu: bool):  # one micro-batch: a whole step makes too many events to summarise quickly
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else []))


def report_profile(prof, wall_s: float, on_gpu: bool) -> float | None:
    """Print where one step's time went; return the fraction of it the device was busy."""
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60), flush=True)
    if not on_gpu:
        return None
    try:
        print(events.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60), flush=True)
    except Exception as exc:  # older torch names it self_cuda_time_total
        print(f"(device table unavailable: {exc})")
    kernel_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in events)
    return kernel_us / 1e6 / wall_s


def run_check(args) -> dict:
    import torch

    import deepspeed
    from transformers import Qwen2_5_VLConfig

    from mrm_ray.config import load_run_config
    from mrm_ray.model.packing import collate_packed
    from mrm_ray.model.published import PUBLISHED, published_config, published_config_dir
    from mrm_ray.train.loop import _to, make_engine, train_micro_step
    from mrm_ray.train.plan import GIB, architecture, estimate, format_plan

    on_gpu = args.device == "cuda"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    if on_gpu:
        torch.cuda.set_device(0)
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)
    workdir = tempfile.mkdtemp(prefix="mrm-gpu-check-")
    config_dir = args.config_dir or str(published_config_dir(args.arch, workdir))
    overrides = [f"model.path={config_dir}", "model.random_init=true", "train.num_workers=1",
                 f"train.use_gpu={'true' if on_gpu else 'false'}", f"train.zero_stage={args.zero_stage}",
                 f"train.micro_batch_size={args.micro_batch}", f"train.global_batch_size={args.micro_batch * args.accum}",
                 f"train.max_steps={args.steps}", f"train.optimizer_impl={args.optimizer_impl}",
                 f"train.gradient_checkpointing={'true' if args.gradient_checkpointing else 'false'}",
                 f"train.precision={'bf16' if on_gpu else 'fp32'}", f"output_dir={workdir}",
                 f"model.vision_attention={args.vision_attention}", f"model.packed_attention={args.packed_attention}"]
    run = load_run_config(args.preset, overrides)
    config = Qwen2_5_VLConfig.from_pretrained(config_dir)
    pairs = synthetic_pairs(config, 64, image_side=args.image_side, prompt_tokens=args.prompt_tokens,
                            response_tokens=args.response_tokens)
    row_tokens = len(pairs[0]["prompt_ids"]) + len(pairs[0]["chosen_ids"]) + len(pairs[0]["rejected_ids"])
    image_tokens = int(pairs[0]["prompt_mm_token_type_ids"].sum())

    torch.manual_seed(run.train.seed)  # same random weights for every variant
    t0 = time.perf_counter()
    engine = make_engine(run, total_steps=args.steps, on_gpu=on_gpu)
    if on_gpu:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    after_init = torch.cuda.memory_allocated() if on_gpu else 0
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())

    rng = np.random.default_rng(1)
    losses, step_times, busy = [], [], None
    for step in range(args.steps):
        t = time.perf_counter()
        for micro in range(args.accum):
            batch = collate_packed([pairs[i] for i in rng.choice(len(pairs), args.micro_batch, replace=False)],
                                   pad_token_id=0)
            profiler = profile_step(on_gpu) if args.profile and step == args.steps - 1 and micro == 0 else None
            t_micro = time.perf_counter()
            with profiler or contextlib.nullcontext():
                metrics = train_micro_step(engine, _to(batch, engine.device), run.loss)
                if on_gpu and profiler is not None:
                    torch.cuda.synchronize()
            if profiler is not None:
                busy = report_profile(profiler, time.perf_counter() - t_micro, on_gpu)
        if on_gpu:
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t)
        losses.append(metrics["loss"])
    pairs_per_step = args.micro_batch * args.accum
    timed = step_times[1:] or step_times  # the first step pays one-off costs (allocator, kernels)
    result = {
        "arch": args.arch if not args.config_dir else args.config_dir, "params": n_params,
        "zero_stage": args.zero_stage, "micro_batch": args.micro_batch, "accumulation": args.accum,
        "gradient_checkpointing": args.gradient_checkpointing, "optimizer_impl": args.optimizer_impl,
        "vision_attention": args.vision_attention,
        "packed_attention": args.packed_attention,
        "packed_tokens_per_pair": row_tokens, "image_tokens_per_pair": image_tokens,
        "build_seconds": round(build_s, 1), "step_seconds": [round(s, 3) for s in step_times],
        "pairs_per_s": pairs_per_step * len(timed) / sum(timed), "losses": losses,
        "losses_finite": bool(np.all(np.isfinite(losses))),
    }
    if busy is not None:
        result["profiled_micro_batch_device_busy_fraction"] = busy
    if on_gpu:
        free, total = torch.cuda.mem_get_info()
        result.update(device=torch.cuda.get_device_name(0), gpu_total_gib=total / GIB,
                      allocated_after_init_gib=after_init / GIB,
                      peak_allocated_gib=torch.cuda.max_memory_allocated() / GIB,
                      peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
                      device_used_now_gib=(total - free) / GIB)
    if args.arch in PUBLISHED and not args.config_dir:
        plan = estimate(architecture(published_config(args.arch)), run.train, gpus=1, tokens_per_pair=row_tokens,
                        image_tokens=image_tokens)
        result["plan_total_gib"] = plan.total / GIB
        result["plan"] = format_plan(args.arch, plan, gpus=1, gpu_mem_gib=round(result.get("gpu_total_gib", 80)),
                                     train=run.train)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="qwen2_5_vl_3b")
    p.add_argument("--preset", default="qwen2_5_vl_3b", help="training preset (mrm-ray configs) whose recipe is used")
    p.add_argument("--config-dir", default=None, help="a config.json to build instead (e.g. the tiny checkpoint)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--zero-stage", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--image-side", type=int, default=644)
    p.add_argument("--prompt-tokens", type=int, default=48)
    p.add_argument("--response-tokens", type=int, default=256)
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--optimizer-impl", choices=("deepspeed", "torch"), default="torch")
    p.add_argument("--profile", action="store_true",
                   help="profile the last step's first micro-batch: top ops and the device-busy fraction")
    p.add_argument("--vision-attention", choices=("windows", "batched"), default="batched")
    p.add_argument("--packed-attention", choices=("auto", "varlen", "sdpa", "dense"), default="auto",
                   help="packed-group kernel: auto = flash varlen on CUDA; dense = the old 4D-mask path")
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args()
    result = run_check(args)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    if "plan" in result:
        print(result["plan"])
        print(f"measured peak: {result['peak_allocated_gib']:.1f} GiB allocated, "
              f"{result['peak_reserved_gib']:.1f} GiB reserved; plan {result['plan_total_gib']:.1f} GiB; "
              f"{result['pairs_per_s']:.2f} pairs/s")
    return 0 if result["losses_finite"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
