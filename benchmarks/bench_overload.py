"""Latency held under overload: a burst of concurrent one-item clients against the tiny ensemble, with the
ingress's admission as it was (1,024 requests held and 1,024 queued per ingress replica) and as it is now
(`IngressServing`'s default: the members' batch capacity, 16/16 for this app), side by side in one run.

    python benchmarks/bench_overload.py [--clients 500] [--requests 1] [--text] [--settings 1024/1024 default]

The application is the shipped `serve/tiny.yaml` (two tiny random reward models behind one endpoint, as a new
user runs it with `mrm-ray serve --config tiny`), on a local Ray on 127.0.0.1. Every client sends `--requests`
one-item `/v1/score` requests one after another, without retrying (a 503 is counted as shed), all clients at
once. Counted per setting: 200s, 503s with and without `Retry-After`, any other status, and requests left
unanswered (no response within `--timeout` seconds, or the connection failed); latency percentiles of the
accepted requests and of the shed ones. The goal (issue: serving at RL scale, item 3): only 200s and 503s
with Retry-After, none unanswered, and the accepted requests' p99 <= 5 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def make_item(*, image: bool) -> dict:
    """One item: the prompt with a 112x112 drawn image (inline base64), or text only."""
    import base64

    from mrm_ray.data.synthetic import image_grounded_pairs

    pair = next(image_grounded_pairs(1, seed=7))
    return {"prompt": pair["prompt"], "response": pair["chosen"],
            **({"images": [base64.b64encode(pair["images"][0]).decode()]} if image else {})}


async def burst(url: str, item: dict, *, clients: int, requests: int, timeout: float) -> list[tuple]:
    """(status or None, seconds, Retry-After) for every request of `clients` concurrent clients."""
    import aiohttp

    async def client(session, c: int) -> list[tuple]:
        out = []
        for r in range(requests):
            start = time.monotonic()
            try:
                async with session.post(f"{url}/v1/score", json={"items": [{**item, "response": f"{c}-{r} {item['response']}"}]}) as resp:
                    await resp.read()
                    out.append((resp.status, time.monotonic() - start, resp.headers.get("Retry-After")))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                out.append((None, time.monotonic() - start, None))
        return out

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return [x for c in await asyncio.gather(*(client(session, c) for c in range(clients))) for x in c]


def summarise(answers: list[tuple], seconds: float) -> dict:
    accepted = np.array([a[1] for a in answers if a[0] == 200])
    shed = [a for a in answers if a[0] == 503]
    pct = (lambda xs, q: float(np.percentile(xs, q)) if len(xs) else float("nan"))
    return {"requests": len(answers), "ok": len(accepted), "shed_retry_after": sum(1 for a in shed if a[2]),
            "shed_no_retry_after": sum(1 for a in shed if not a[2]),
            "other": sum(1 for a in answers if a[0] not in (200, 503, None)),
            "unanswered": sum(1 for a in answers if a[0] is None),
            "ok_p50_s": pct(accepted, 50), "ok_p99_s": pct(accepted, 99), "ok_max_s": pct(accepted, 100),
            "shed_p99_s": pct([a[1] for a in shed], 99), "seconds": seconds, "ok_per_s": len(accepted) / seconds}


def app_args(setting: str) -> dict:
    """The shipped tiny app's args, its ingress admission replaced by `setting` (ONGOING/QUEUED, or `default`)."""
    import yaml

    from mrm_ray.config.shipped import path as shipped

    args = yaml.safe_load(shipped("serve", "tiny").read_text())["applications"][0]["args"]
    if setting != "default":
        ongoing, queued = (int(x) for x in setting.split("/"))
        args["ingress"] = {**args.get("ingress", {}), "max_ongoing_requests": ongoing, "max_queued_requests": queued}
    return args


def admission(setting: str) -> str:
    from mrm_ray.config import AppArgs, validate

    args = validate(AppArgs, app_args(setting))
    ongoing, queued = args.ingress_admission(args.ensemble_config().members)
    return f"{ongoing}/{queued}" + (" (default)" if setting == "default" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--requests", type=int, default=1, help="one-item requests per client, in sequence")
    parser.add_argument("--timeout", type=float, default=120.0, help="a request with no answer by then is "
                                                                     "unanswered")
    parser.add_argument("--settings", nargs="+", default=["1024/1024", "default"],
                        help="ingress max_ongoing_requests/max_queued_requests per replica, or `default` "
                             "(IngressServing's)")
    parser.add_argument("--text", action="store_true", help="text-only items (default: one image per item)")
    parser.add_argument("--repeats", type=int, default=2, help="bursts per setting (a pause between)")
    args = parser.parse_args()

    import ray
    import requests
    from ray import serve

    from mrm_ray.serve.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    item = make_item(image=not args.text)
    results = []
    for setting in args.settings:
        serve.run(build_app(app_args(setting)), name="overload", route_prefix="/",
                  logging_config={"enable_access_log": False})
        for _ in range(20):  # warm: both members loaded and compiled their first forward
            assert requests.post(f"{url}/v1/score", json={"items": [item]},
                                 timeout=120).status_code == 200
        for repeat in range(args.repeats):
            time.sleep(3)
            start = time.monotonic()
            answers = asyncio.run(burst(url, item, clients=args.clients, requests=args.requests, timeout=args.timeout))
            results.append((setting, repeat, summarise(answers, time.monotonic() - start)))
        serve.delete("overload")
    serve.shutdown()
    ray.shutdown()

    print(f"{args.clients} concurrent clients x {args.requests} one-item requests ({'text' if args.text else 'one image'}), no "
          f"retries; the shipped tiny ensemble (2 members); {os.cpu_count()} cores")
    print(f"{'ingress ongoing/queued':<24} {'burst':>5} {'200':>5} {'503+RA':>7} {'503':>5} {'other':>6} "
          f"{'unansw':>7} {'ok p50 s':>9} {'ok p99 s':>9} {'ok max s':>9} {'shed p99 s':>10} {'200/s':>7}")
    for setting, repeat, r in results:
        label = admission(setting)
        print(f"{label:<24} {repeat + 1:>5} {r['ok']:>5} {r['shed_retry_after']:>7} {r['shed_no_retry_after']:>5} "
              f"{r['other']:>6} {r['unanswered']:>7} {r['ok_p50_s']:>9.2f} {r['ok_p99_s']:>9.2f} "
              f"{r['ok_max_s']:>9.2f} {r['shed_p99_s']:>10.2f} {r['ok_per_s']:>7.1f}")
    for setting in args.settings:
        rs = [r for s, _, r in results if s == setting]
        worst = max(r["ok_p99_s"] for r in rs)
        clean = all(r["unanswered"] == r["other"] == r["shed_no_retry_after"] == 0 for r in rs)
        print(f"{admission(setting)}: worst accepted p99 {worst:.2f} s (goal <= 5 s); only 200s and 503s with Retry-After, "
              f"none unanswered: {'yes' if clean else 'NO'}")


if __name__ == "__main__":
    main()
