"""Serving throughput and latency: the Serve ensemble over HTTP vs the same member in-process.

    python benchmarks/bench_serve.py [--seconds 12] [--hidden 512] [--layers 4]

Member: a tiny-tokenizer reward model widened (text 512 x 4 layers by default) so that a
16-item forward takes well over 100 ms on this CPU, as a real reward model's does on a GPU.
Items: an image-grounded prompt (one 112x112 image) and a ~20-word response.
In-process: `Scorer.score_items` (the member's own code: encode, then forward) at batch
sizes 1..64 with all cores; the best items/s is the baseline. Serve: one member replica
given every core, behind the FastAPI ingress, driven by aiohttp at concurrency 1, 8, 32
with requests of 1 and of 16 items; then again with dynamic batching off
(`max_batch_size: 1`). With batching on, the same requests also go through the app's
`DeploymentHandle` (the Ray-native client's path, `Ingress.call`: no HTTP, no proxy), from this driver on
the same cluster. Goals: >= 0.7 of in-process items/s at concurrency 32, and batching on vs off >= 3x for
1-item requests; handle vs HTTP is reported side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

CORES = os.cpu_count() or 2


def make_items(n: int) -> list[dict]:
    from mrm_ray.data.synthetic import image_grounded_pairs

    words = " because the picture clearly shows it and nothing in the image suggests otherwise at all"
    return [{"prompt": r["prompt"], "images": r["images"], "response": r["chosen"] + words}
            for r in image_grounded_pairs(n, seed=5)]


def in_process(path: Path, items: list[dict], seconds: float) -> dict[int, float]:
    import torch

    from mrm_ray.model.scorer import Scorer

    torch.set_num_threads(CORES)
    scorer = Scorer(str(path))
    rates = {}
    for batch in (1, 4, 16, 32, 64):
        scorer.score_items(items[:batch])  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            scorer.score_items(items[done % len(items):][:batch] or items[:batch])
            done += batch
        rates[batch] = done / (time.perf_counter() - start)
    return rates


def _point(latencies: list[float], items: int, elapsed: float, failures: int) -> dict:
    lat = np.array(latencies) * 1000
    return {"items_per_s": items / elapsed, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"), "failures": failures}


async def drive(url: str, payloads: list[dict], concurrency: int, seconds: float) -> dict:
    import aiohttp

    latencies, items, failures = [], 0, 0
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency * 2)  # aiohttp's default pool (100) would cap us

    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(k: int) -> None:
            nonlocal items, failures
            i = k
            while time.perf_counter() < stop:
                payload = payloads[i % len(payloads)]
                t = time.perf_counter()
                async with session.post(url + "/v1/score", json=payload) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                        continue
                latencies.append(time.perf_counter() - t)
                items += len(payload["items"])
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return _point(latencies, items, elapsed, failures)


async def drive_handle(app: str, payloads: list[dict], concurrency: int, seconds: float) -> dict:
    """`drive` through the app's DeploymentHandle (what HandleRewardClient calls); a call the app sheds counts as
    failed, as `drive` counts a 503."""
    from ray import serve
    from ray.serve.exceptions import BackPressureError

    handle = serve.get_app_handle(app)
    latencies, items, failures = [], 0, 0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal items, failures
        i = k
        while time.perf_counter() < stop:
            payload = payloads[i % len(payloads)]
            t = time.perf_counter()
            try:
                answer = await handle.call.remote("score", payload)
            except BackPressureError:  # shed at the ingress's queue: what HTTP clients get as a 503
                answer = {"status": 503}
            i += concurrency
            if answer["status"] != 200:
                failures += 1
                continue
            latencies.append(time.perf_counter() - t)
            items += len(payload["items"])

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    return _point(latencies, items, elapsed, failures)


def deploy(members: list[dict], port: int, *, max_batch_size: int = 16, access_log: bool = False,
           cpus_each: float = CORES) -> str:
    """The app `bench` at `port`: `members` (name, path, ...), one replica each holding `cpus_each` CPUs."""
    from ray import serve

    from mrm_ray.serve.app import build_app

    serve.run(build_app({
        "members": members,
        "serving": {"max_batch_size": max_batch_size, "max_ongoing_requests": 32,  # the same on and off
                    "num_replicas": 1, "num_cpus": cpus_each, "batch_wait_timeout_s": 0.01},
        # admission wide enough that none of these clients is shed: this measures throughput (bench_overload.py
        # measures shedding)
        "ingress": {"num_cpus": 0, "max_ongoing_requests": 64, "max_queued_requests": 64}}), name="bench",
        route_prefix="/",
        logging_config={"enable_access_log": access_log})
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0, help="per measured point")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--no-access-log", action="store_true", help="Serve's per-request log lines off")
    parser.add_argument("--quick", action="store_true", help="only 1-item requests at c=32, batching on and off")
    args = parser.parse_args()

    import base64

    import ray
    from ray import serve

    from mrm_ray.model.checkpoints import build_tiny_reward_checkpoint

    items = make_items(64)
    wire = [{**it, "images": [base64.b64encode(im).decode() for im in it["images"]]} for it in items]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_reward_checkpoint(Path(tmp) / "member", seed=0, text_hidden=args.hidden,
                                            text_layers=args.layers)
        base = in_process(path, items, args.seconds)
        best_batch = max(base, key=base.get)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ray.init(address="local", num_cpus=CORES + 1, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        results = {}
        for batching, max_batch in (("on", 16), ("off", 1)):
            url = deploy([{"name": "m", "path": str(path)}], port, max_batch_size=max_batch,
                         access_log=not args.no_access_log)
            shapes = [(1, 1), (1, 8), (1, 32)] + ([(16, 1), (16, 8), (16, 32)] if batching == "on" else [])
            if args.quick:
                shapes = [(1, 32)] + ([(16, 32)] if batching == "on" else [])
            for per_request, concurrency in shapes:
                payloads = [{"items": wire[i:i + per_request]} for i in range(0, len(wire), per_request)]
                asyncio.run(drive(url, payloads, concurrency, 2.0))  # warm-up
                results[batching, per_request, concurrency] = asyncio.run(
                    drive(url, payloads, concurrency, args.seconds))
                if batching == "on" and concurrency in (1, 32):
                    asyncio.run(drive_handle("bench", payloads, concurrency, 2.0))  # warm-up
                    results["handle", per_request, concurrency] = asyncio.run(
                        drive_handle("bench", payloads, concurrency, args.seconds))
            serve.delete("bench")
        serve.shutdown()
        ray.shutdown()

    print(f"member: tiny tokenizer, text {args.hidden} x {args.layers} layers; items with one 112x112 image; "
          f"{CORES} cores; {args.seconds:g} s per point; access log {'off' if args.no_access_log else 'on'}")
    print("in-process Scorer.score_items, items/s by batch size: "
          + ", ".join(f"{b}: {r:.1f}" for b, r in base.items()))
    print(f"{'serve':<30} {'items/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'vs in-process':>14} {'failed':>7}")
    for (batching, per_request, concurrency), r in results.items():
        label = (f"handle, {per_request:>2} item(s), c={concurrency}" if batching == "handle"
                 else f"batching {batching}, {per_request:>2} item(s), c={concurrency}")
        print(f"{label:<30} {r['items_per_s']:>9.1f} {r['p50_ms']:>9.0f} {r['p99_ms']:>9.0f} "
              f"{r['items_per_s'] / base[best_batch]:>14.2f} {r['failures']:>7}")
    best32 = max(results["on", 1, 32]["items_per_s"], results["on", 16, 32]["items_per_s"])
    print(f"in-process best (batch {best_batch}): {base[best_batch]:.1f} items/s")
    print(f"serve at c=32 / in-process best: 16-item requests {results['on', 16, 32]['items_per_s'] / base[best_batch]:.2f}, "
          f"1-item requests {results['on', 1, 32]['items_per_s'] / base[best_batch]:.2f} (goal >= 0.7; best {best32 / base[best_batch]:.2f})")
    for per_request, concurrency in sorted(k[1:] for k in results if k[0] == "handle"):
        print(f"handle / HTTP, {per_request}-item requests at c={concurrency}: items/s "
              f"{results['handle', per_request, concurrency]['items_per_s'] / results['on', per_request, concurrency]['items_per_s']:.2f}x, "
              f"p50 {results['handle', per_request, concurrency]['p50_ms']:.0f} vs "
              f"{results['on', per_request, concurrency]['p50_ms']:.0f} ms")
    print(f"dynamic batching on / off, 1-item requests at c=32: "
          f"{results['on', 1, 32]['items_per_s'] / results['off', 1, 32]['items_per_s']:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
