"""Rewards for rollouts from the served ensemble, without ever blocking on one call.

Calls run on a background asyncio loop (`AsyncRewardClient`): each group of rollouts is
scored as soon as it is generated, in chunks, many in flight at once, each with its own
timeout, sent as its deadline so that the server drops what this side stopped waiting for.
While the service is unavailable or sheds load (refused connections, 429/502/503/504, timeouts)
a chunk is retried with backoff, or after the `Retry-After` the server asks for, for up to
`max_wait_s`; after that the step fails with `RewardServiceDown` and nothing of it reaches the
learner. Rule-only rewards need no service at all. `reward.url=serve://APP` scores through the Serve app's
`DeploymentHandle` instead (serve/handle_client.py: same results and retries, no HTTP), which is what the
job does with the ensemble it deploys itself (`reward.members`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Sequence

from mrm_ray.rewards import rule_reward


HANDLE_SCHEME = "serve://"  # reward.url=serve://APP: the Serve app APP on this cluster, through its handle


class RewardServiceDown(RuntimeError):
    """The reward service stayed unavailable past the configured wait."""


class RewardService:
    """`submit(items)` -> a Future of one result per item: {reward, model_reward, scores, std, latency_s}."""

    def __init__(self, cfg, url: str | None) -> None:
        self.cfg, self.url = cfg, url
        if cfg.mode != "rule" and not url:
            raise ValueError("reward.mode model/hybrid needs a reward service: set reward.url (or reward.members, "
                             "which `mrm-ray grpo` deploys)")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="reward-service", daemon=True)
        self.thread.start()
        self.client = None
        if url and url.startswith(HANDLE_SCHEME):  # the app on this job's own Ray cluster: its handle, no HTTP
            from mrm_ray.serve.handle_client import AsyncHandleRewardClient

            client = AsyncHandleRewardClient(url[len(HANDLE_SCHEME):], token=os.environ.get(cfg.token_env),
                                             max_wait_s=cfg.max_wait_s)
        elif url:
            from mrm_ray.serve.client import AsyncRewardClient

            client = AsyncRewardClient(url, token=os.environ.get(cfg.token_env), timeout=cfg.timeout_s,
                                       max_connections=cfg.max_concurrency, max_wait_s=cfg.max_wait_s)
        if url:
            self.client = self._run(client.__aenter__())
            self.limit = asyncio.Semaphore(cfg.max_concurrency)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, items: Sequence[dict], *, served: bool | None = None) -> concurrent.futures.Future:
        """Items are {prompt, images, response, reference}; `served=False` scores by rule only."""
        served = self.cfg.mode != "rule" if served is None else served
        if not served or self.client is None:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result([{"reward": rule_reward(it["response"], it.get("reference")), "model_reward": None,
                                "scores": {}, "std": 0.0, "latency_s": 0.0} for it in items])
            return future
        return asyncio.run_coroutine_threadsafe(self._score(list(items)), self.loop)

    async def _score(self, items: list[dict]) -> list[dict]:
        size = self.cfg.chunk_items
        chunks = await asyncio.gather(*(self._chunk(items[i:i + size]) for i in range(0, len(items), size)))
        results = [r for chunk in chunks for r in chunk]
        if self.cfg.mode == "rule":  # served scores asked for the metrics only
            for it, r in zip(items, results):
                r["reward"] = rule_reward(it["response"], it.get("reference"))
        return results

    async def _chunk(self, items: list[dict]) -> list[dict]:
        from mrm_ray.serve.client import RewardError

        mode = "hybrid" if self.cfg.mode == "hybrid" else "model"
        payload = [{k: it[k] for k in ("prompt", "images", "response") if k in it} |
                   ({"reference": it["reference"]} if mode == "hybrid" and it.get("reference") else {})
                   for it in items]
        async with self.limit:
            start = time.perf_counter()
            try:
                results = await self.client.score(payload, reward=mode, timeout_s=self.cfg.timeout_s,
                                                  method=self.cfg.method, uncertainty_coef=self.cfg.uncertainty_coef)
            except RewardError as exc:
                if exc.status in (429, 502, 503, 504):
                    raise RewardServiceDown(f"reward service at {self.url} still unavailable after "
                                            f"{self.cfg.max_wait_s:.0f}s: {exc}") from None
                raise  # a 4xx is a bad request from us: say so, do not retry
            except Exception as exc:  # connection refused / reset / timed out, past max_wait_s
                raise RewardServiceDown(f"reward service at {self.url} unreachable for {self.cfg.max_wait_s:.0f}s "
                                        f"({type(exc).__name__}: {exc}); is the Serve app running?") from None
        latency = time.perf_counter() - start
        return [{**r, "latency_s": latency} for r in results]

    def close(self) -> None:
        async def cancel_pending() -> None:  # calls still in flight when a step failed
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._run(cancel_pending())
        if self.client is not None:
            self._run(self.client.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
