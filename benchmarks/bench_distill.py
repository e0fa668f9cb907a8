"""What distillation buys at serving time: a student reward model served alone against its teachers served, on
the same items, over HTTP.

    python benchmarks/bench_distill.py [--seconds 12] [--hidden 512] [--layers 4] [--critique-tokens 32]

Every model has the same architecture: a tiny-tokenizer Qwen2.5-VL widened to text 512 x 4 layers, so that a
forward costs what matters here. Items are image-grounded prompts (one 112x112 image) with a ~20-word response,
sent as 1-item requests by 16 concurrent aiohttp clients (bench_serve.py's driver), each app given every core:

    student            one scalar reward model (what `mrm-ray label` + `mrm-ray train` make)
    ensemble teacher   two scalar reward models (each replica half the cores), the mean
    verdict judge      a generative checkpoint read as log P(Yes) - log P(No): one forward, like a scalar member
    critique judge     the same checkpoint writing a critique of up to --critique-tokens tokens before its verdict

Printed: items/s of each, and the student's items/s over each teacher's (the price RL pays per reward call).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import CORES, deploy, drive, make_items  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0, help="per measured point")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--critique-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16, help="clients (the app admits 16 + 16 queued)")
    args = parser.parse_args()

    import ray
    from ray import serve

    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint
    from mrm_ray.model.tiny import build_tiny_checkpoint

    items = make_items(64)
    wire = [{"items": [{**it, "images": [base64.b64encode(im).decode() for im in it["images"]]}]} for it in items]
    size = {"text_hidden": args.hidden, "text_layers": args.layers}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rm = [str(build_tiny_reward_checkpoint(tmp / f"rm{s}", seed=s, **size)) for s in range(3)]
        generator = str(build_tiny_checkpoint(tmp / "judge", seed=0, **size))
        judge = {"name": "judge", "kind": "judge", "path": generator}
        setups = {
            "student": ([{"name": "student", "path": rm[2]}], CORES),
            "ensemble teacher (2 members)": ([{"name": "t0", "path": rm[0]}, {"name": "t1", "path": rm[1]}],
                                             CORES / 2),
            "verdict judge": ([judge], CORES),
            f"critique judge ({args.critique_tokens} tokens)": (
                [{**judge, "judge": {"mode": "critique", "max_critique_tokens": args.critique_tokens,
                                     "critique_timeout_s": 600}}], CORES),
        }
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ray.init(address="local", num_cpus=CORES + 1, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        results = {}
        for label, (members, cpus) in setups.items():
            url = deploy(members, port, cpus_each=cpus)
            asyncio.run(drive(url, wire, args.concurrency, 3.0))  # warm-up
            results[label] = asyncio.run(drive(url, wire, args.concurrency, args.seconds))
            serve.delete("bench")
        serve.shutdown()
        ray.shutdown()

    print(f"models: tiny tokenizer, Qwen2.5-VL text {args.hidden} x {args.layers} layers; 1-item requests with one "
          f"112x112 image at c={args.concurrency}; {CORES} cores per app; {args.seconds:g} s per point")
    print(f"{'served':<32} {'items/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'failed':>7} {'student / this':>15}")
    student = results["student"]["items_per_s"]
    for label, r in results.items():
        print(f"{label:<32} {r['items_per_s']:>9.1f} {r['p50_ms']:>9.0f} {r['p99_ms']:>9.0f} {r['failures']:>7} "
              f"{student / r['items_per_s']:>14.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main()
