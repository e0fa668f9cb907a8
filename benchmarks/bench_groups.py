"""Packed groups: training by token budget, scoring groups, and memory vs row length, side by side.

    python benchmarks/bench_groups.py [--only train,score,memory] [--steps 3] [--threads N]

train   Training-step pairs/s on a length mix drawn from the real shared data (the 10 RLAIF-V
        pairs with their images at Qwen2.5-VL's default budget, max_pixels 1280*28*28, and 22
        text pairs of LLaMA-Factory's demo set): 16 pairs a step, as (a) today's 4 micro-batches
        of 4 pairs, one pair per row padded to the longest, dense 4D mask; (b) the same rows
        with the packed-group kernel; (c) micro-batches cut by tokens (`step_micro_batches`,
        rows of at most the budget). Prints pairs/s and the share of real tokens per
        micro-batch. Goals: (c) / (a) >= 1.3x, real tokens >= 95%.
score   A group of 8 responses to the RLAIF-V image prompt with the most tokens vs the same 8 as separate items,
        in-process (`Scorer.score_groups` vs `Scorer.score_items`) and through Serve (one
        `/v1/score` request with the group vs one with 8 items). Goal >= 3x items/s.
memory  Peak memory of one training forward and backward over a packed row of 2k, 4k, 8k and
        16k tokens (text groups of 1,024 tokens: a 512-token prompt, 8 responses of 64), each in
        a fresh process, packed-group kernel vs the dense mask. Goal: linear, not quadratic.

The member and the trained model are the tiny tokenizer's checkpoint widened (text 256 x 2,
vision 128 x 2 for training and memory; text 512 x 4 for scoring), float32, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MRM_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_MAX_PIXELS = 1280 * 28 * 28


def _checkpoint(tmp: Path, *, text_hidden: int, text_layers: int, vision_hidden: int) -> Path:
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint

    path = build_tiny_reward_checkpoint(tmp / f"rm-{text_hidden}x{text_layers}", seed=0, text_hidden=text_hidden,
                                        text_layers=text_layers, vision_hidden=vision_hidden)
    load_processor(path, max_pixels=DEFAULT_MAX_PIXELS).save_pretrained(path)  # real images at the real budget
    return path


def _real_pairs(n_text: int) -> list[dict]:
    from mrm_ray.data.readers.chat_messages import read_chat_messages
    from mrm_ray.data.readers.sharegpt import read_sharegpt
    from mrm_ray.data.schema import to_chat_messages

    rlaif = [r for r in read_chat_messages(SHARED / "rlaif-v-sample" / "rlaif-v.jsonl") if isinstance(r, dict)]
    text = [r for r in read_sharegpt(SHARED / "text-preference" / "dpo_en_demo.json") if isinstance(r, dict)]
    return [{**r, "prompt": to_chat_messages(r["prompt"])} for r in rlaif + text[:n_text]]


# ------------------------------------------------------------------------------------ train
def _train_step(model, optimizer, micro_batches) -> float:
    from mrm_ray.model.loss import bradley_terry_loss

    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    total = sum(n for _, n in micro_batches)
    for batch, n in micro_batches:
        chosen, rejected = model.forward_pairs(batch)
        (bradley_terry_loss(chosen, rejected).loss * n / total).backward()
    optimizer.step()
    return time.perf_counter() - start


def bench_train(tmp: Path, steps: int, budget: int) -> None:
    from mrm_ray.data.collate import PairCollate, micro_batch_count, step_micro_batches
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor
    from mrm_ray.model.reward_model import RewardModel

    path = _checkpoint(tmp, text_hidden=256, text_layers=2, vision_hidden=128)
    encoder = PairEncoder(load_processor(path))
    pairs = [encoder.encode_pair(r["prompt"], r["images"], r["chosen"], r["rejected"]) for r in _real_pairs(22)]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    step_pairs = [[pairs[i] for i in order[s * 16:(s + 1) * 16]] for s in range(len(pairs) // 16)]
    lengths = [len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs]
    fixed = PairCollate(pad_token_id=encoder.pad_token_id)
    by_tokens = PairCollate(pad_token_id=encoder.pad_token_id, row_tokens=budget)
    layouts = {
        "(a) 4 x 4 pairs, a pair per row, dense mask": (
            "dense", [[(fixed.pairs(sp[i:i + 4]), 4) for i in range(0, 16, 4)] for sp in step_pairs]),
        "(b) 4 x 4 pairs, a pair per row, group kernel": (
            "sdpa", [[(fixed.pairs(sp[i:i + 4]), 4) for i in range(0, 16, 4)] for sp in step_pairs]),
        f"(c) cut by tokens (budget {budget}), group kernel": (
            "sdpa", [step_micro_batches(sp, by_tokens, parts=micro_batch_count(sp, budget)) for sp in step_pairs]),
    }
    model = RewardModel.from_pretrained(path).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times: dict[str, list[float]] = {k: [] for k in layouts}
    for name, (kernel, batches) in layouts.items():  # warm-up
        model.packed_attention = kernel
        _train_step(model, optimizer, batches[0])
    for rep in range(steps):  # interleaved so that machine noise hits all alike
        for name, (kernel, batches) in layouts.items():
            model.packed_attention = kernel
            times[name].append(_train_step(model, optimizer, batches[rep % len(batches)]))
    print(f"train: {len(pairs)} real pairs ({sum(bool(p.get('pixel_values') is not None) for p in pairs)} with "
          f"images at max_pixels {DEFAULT_MAX_PIXELS}), {min(lengths)}..{max(lengths)} tokens a pair "
          f"(median {int(np.median(lengths))}); 16 pairs a step, {steps} timed steps each after a warm-up; "
          f"model text 256x2, vision 128x2, {torch.get_num_threads()} threads")
    print(f"{'layout':<52} {'pairs/s':>8} {'micro-batches':>14} {'real tokens':>12}")
    rates = {}
    for name, (_, batches) in layouts.items():
        rates[name] = 16 / statistics.median(times[name])
        mbs = [b for step in batches for b, _ in step]
        real = sum(int(b["segment_ids"].ne(0).sum()) for b in mbs) / sum(b["input_ids"].numel() for b in mbs)
        print(f"{name:<52} {rates[name]:>8.3f} {len(mbs) / len(batches):>14.1f} {real:>11.1%}")
    names = list(layouts)
    print(f"(c) / (a): {rates[names[2]] / rates[names[0]]:.2f}x (goal >= 1.3x); "
          f"(c) / (b): {rates[names[2]] / rates[names[1]]:.2f}x")


# ------------------------------------------------------------------------------------ score
def bench_score(tmp: Path, seconds: float) -> None:
    import asyncio
    import base64
    import socket

    import aiohttp
    import ray
    from ray import serve

    from mrm_ray.model.scorer import Scorer
    from mrm_ray.serve.app import build_app

    path = _checkpoint(tmp, text_hidden=512, text_layers=4, vision_hidden=64)
    from mrm_ray.model.inputs import PairEncoder
    from mrm_ray.model.processor import load_processor

    encoder = PairEncoder(load_processor(path))
    pair = max(_real_pairs(0), key=lambda r: len(encoder.encode_prompt(r["prompt"], r["images"])["prompt_ids"]))
    responses = [f"{pair['chosen']} ({i})" if i % 2 else f"{pair['rejected']} ({i})" for i in range(8)]
    group = {"prompt": pair["prompt"], "images": pair["images"], "responses": responses}
    items = [{"prompt": pair["prompt"], "images": pair["images"], "response": r} for r in responses]
    torch.set_num_threads(os.cpu_count() or 2)
    scorer = Scorer(str(path))
    tokens = len(scorer.encoder.encode_prompt(pair["prompt"], pair["images"])["prompt_ids"])

    calls = {"group": lambda: scorer.score_groups([group]), "items": lambda: scorer.score_items(items)}
    spent = {k: 0.0 for k in calls}
    done = {k: 0 for k in calls}
    for fn in calls.values():  # warm-up
        fn()
    while sum(spent.values()) < 2 * seconds:  # interleaved so that machine noise hits both alike
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            spent[name] += time.perf_counter() - start
            done[name] += 8
    grouped, single = (done[k] / spent[k] for k in ("group", "items"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=(os.cpu_count() or 2) + 1, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"members": [{"name": "m", "path": str(path)}],
                         "serving": {"max_batch_size": 16, "num_replicas": 1, "num_cpus": os.cpu_count() or 2},
                         "ingress": {"num_cpus": 0}}), name="bench", route_prefix="/",
              logging_config={"enable_access_log": False})
    wire = [base64.b64encode(im).decode() for im in pair["images"]]

    async def drive(bodies: dict[str, dict]) -> dict[str, float]:
        spent = {k: 0.0 for k in bodies}
        async with aiohttp.ClientSession() as session:
            async def once(body) -> float:
                start = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{port}/v1/score", json=body) as r:
                    assert r.status == 200, await r.text()
                    assert len((await r.json())["results"]) == 8
                return time.perf_counter() - start
            for body in bodies.values():  # warm-up
                await once(body)
            rounds = 0
            while sum(spent.values()) < 2 * seconds:  # interleaved, one request at a time
                for name, body in bodies.items():
                    spent[name] += await once(body)
                rounds += 1
        return {k: 8 * rounds / v for k, v in spent.items()}

    served = asyncio.run(drive({"group": {"items": [{**group, "images": wire}]},
                                "items": {"items": [{**it, "images": wire} for it in items]}}))
    served_group, served_items = served["group"], served["items"]
    serve.shutdown()
    ray.shutdown()
    print(f"score: one RLAIF-V image prompt ({tokens} tokens at max_pixels {DEFAULT_MAX_PIXELS}), 8 responses; "
          f"member text 512x4; {seconds:g} s per point")
    print(f"{'':<24} {'group of 8':>12} {'8 items':>10} {'ratio':>7}")
    print(f"{'in-process items/s':<24} {grouped:>12.2f} {single:>10.2f} {grouped / single:>6.2f}x")
    print(f"{'through Serve items/s':<24} {served_group:>12.2f} {served_items:>10.2f} "
          f"{served_group / served_items:>6.2f}x   (goal >= 3x)")


# ----------------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _memory_child(path: str, length: int, kernel: str) -> None:
    from mrm_ray.model.packing import collate_groups
    from mrm_ray.model.reward_model import RewardModel

    model = RewardModel.from_pretrained(path, packed_attention=kernel).train()
    rng = np.random.default_rng(0)
    groups = [{"prompt_ids": rng.integers(10, 600, 512), "prompt_mm_token_type_ids": np.zeros(512, np.int64),
               "responses": [rng.integers(10, 600, 64) for _ in range(8)]} for _ in range(length // 1024)]
    batch = collate_groups(groups, pad_token_id=0, row_tokens=length)
    assert batch["input_ids"].shape == (1, length)
    # the peak RSS from here on: VmHWM, reset to the current RSS (getrusage's maxrss would include the
    # parent's size, which a child inherits across fork and exec)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    model(**batch).sum().backward()
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024, "seconds": seconds}))


def bench_memory(tmp: Path, lengths: list[int], dense_up_to: int) -> None:
    path = _checkpoint(tmp, text_hidden=256, text_layers=2, vision_hidden=64)
    print("memory: one packed row, training forward + backward, text 256x2; groups of 1,024 tokens "
          "(512 prompt + 8 x 64); peak RSS above the loaded model, each point a fresh process")
    print(f"{'tokens':>7} {'group kernel MiB':>17} {'s':>6} {'dense mask MiB':>15} {'s':>6}")
    for length in lengths:
        row = {}
        for kernel in ("sdpa", "dense"):
            if kernel == "dense" and length > dense_up_to:
                row[kernel] = None
                continue
            out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(length), kernel],
                                 capture_output=True, text=True, timeout=1800)
            row[kernel] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
        dense = row["dense"] or {"peak_mib": float("nan"), "seconds": float("nan")}
        print(f"{length:>7} {row['sdpa']['peak_mib']:>17.0f} {row['sdpa']['seconds']:>6.1f} "
              f"{dense['peak_mib']:>15.0f} {dense['seconds']:>6.1f}"
              f"   group kernel MiB per 1k tokens: {row['sdpa']['peak_mib'] / length * 1024:.0f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        _memory_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="train,score,memory")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per layout")
    parser.add_argument("--budget", type=int, default=4096, help="tokens per micro-batch for layout (c)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scoring point")
    parser.add_argument("--lengths", default="2048,4096,8192,16384")
    parser.add_argument("--dense-up-to", type=int, default=8192, help="longest row to run the dense mask at")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in only:
            bench_train(Path(tmp), args.steps, args.budget)
        if "score" in only:
            bench_score(Path(tmp), args.seconds)
        if "memory" in only:
            bench_memory(Path(tmp), [int(v) for v in args.lengths.split(",")], args.dense_up_to)


if __name__ == "__main__":
    main()
