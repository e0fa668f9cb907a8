"""`RewardMember`: one ensemble member as a Ray Serve deployment with dynamic batching.

The ingress sends each member chunks of groups (one prompt, its responses; at most
`max_batch_size` responses per call) or of pairs; `@serve.batch` groups concurrent calls
until the batch holds `max_batch_size` responses or pairs (`batch_size_fn` counts those, not
calls) or `batch_wait_timeout_s` passes, and the scorer packs the batch into forwards that
fit `max_batch_tokens`, each prompt and its images encoded once per group. The checkpoint
is in `user_config` (`MemberSettings`), so a new one is swapped in by `reconfigure` while the
old one keeps answering.

A member is a scalar reward model (`Scorer`) or a judge (`Judge`, model/judge.py), by its settings' `kind`.
A response a judge gives no score (a critique that timed out) is `None` in `values` with its reason in
`unscored`, and the others are scored; an input that cannot be encoded is in `errors` (a 4xx).

A call may carry the seconds its request has left (`timeout_s`): calls whose time has run
out by the time their batch runs are dropped, not computed (`{"expired": true}`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from ray import serve

from mrm_ray.config import MemberSettings, validate
from mrm_ray.model.judge import member_scorer
from mrm_ray.model.scorer import Scorer
from mrm_ray.serve.metrics import MemberMetrics


def count_items(calls: list[list[dict]]) -> int:
    """Responses of groups, or pairs, in a batch of calls."""
    return sum(len(x["responses"]) if "responses" in x else 1 for c in calls for x in c)


@serve.deployment(name="RewardMember")
class RewardMember:
    def __init__(self, name: str, *, max_batch_size: int, defaults: dict[str, Any]) -> None:
        self.name = name
        self._defaults = dict(defaults)
        self._scorer: Scorer | None = None
        self._batch_sizes: Counter = Counter()  # items per batch -> batches, for /v1/models
        self._requests = 0
        self._expired = 0  # calls dropped because their deadline passed before their batch ran
        for handler in (self._score_batch, self._compare_batch):
            handler.set_max_batch_size(max_batch_size)
        self.max_batch_size = max_batch_size
        self.metrics = MemberMetrics(name)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the configured checkpoint beside the current one, then swap: no request fails. `user_config`
        holds the settings a new `serve deploy` changes (config/ensemble.py's `MemberSettings`), over the
        ones the application was built with."""
        settings = validate(MemberSettings, {**self._defaults, **(user_config or {})}, where=f"member {self.name}")
        self._scorer = await asyncio.to_thread(member_scorer, settings, name=self.name)
        for handler in (self._score_batch, self._compare_batch):
            handler.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def _reply(self, scorer: Scorer, values: list) -> dict[str, Any]:
        """`values` per input (a group's list, a pair's two, None where an input failed: its reason in `errors`),
        and `unscored`: [input, position, reason] for each response given no score (None in its place)."""
        errors = {i: v for i, v in enumerate(values) if isinstance(v, str)}
        unscored = [[i, k, x] for i, v in enumerate(values) if not isinstance(v, str)
                    for k, x in enumerate(v if isinstance(v, (list, tuple)) else [v]) if isinstance(x, str)]
        clean = [None if isinstance(v, str) else
                 type(v)(None if isinstance(x, str) else x for x in v) if isinstance(v, (list, tuple)) else v
                 for v in values]
        return {"values": clean, "errors": errors, "unscored": unscored,
                "version": scorer.version, "score_mean": scorer.score_mean, "score_std": scorer.score_std}

    async def _batched(self, calls: list[list[dict]], deadlines: list[float | None], score) -> list[dict[str, Any]]:
        scorer = self._scorer  # one checkpoint for the whole batch, even if a swap lands meanwhile
        now = time.monotonic()
        live = [i for i, d in enumerate(deadlines) if d is None or d > now]
        self._expired += len(calls) - len(live)
        flat = [x for i in live for x in calls[i]]
        out: list[dict[str, Any]] = [{"expired": True} for _ in calls]
        if not flat:
            return out
        self._batch_sizes[count_items([flat])] += 1
        self._requests += len(live)
        start = time.perf_counter()
        values = await asyncio.to_thread(score, scorer, flat)
        self.metrics.batch(count_items([flat]), time.perf_counter() - start, values, mean=scorer.score_mean,
                           std=scorer.score_std or 1.0)
        start = 0
        for i in live:
            out[i] = self._reply(scorer, values[start:start + len(calls[i])])
            start += len(calls[i])
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=count_items)
    async def _score_batch(self, calls: list[list[dict]], deadlines: list[float | None]) -> list[dict[str, Any]]:
        return await self._batched(calls, deadlines, lambda scorer, flat: scorer.score_groups(flat))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=count_items)
    async def _compare_batch(self, calls: list[list[dict]], deadlines: list[float | None]) -> list[dict[str, Any]]:
        return await self._batched(calls, deadlines, lambda scorer, flat: scorer.score_pairs(flat))

    @staticmethod
    def _deadline(timeout_s: float | None) -> float | None:
        return None if timeout_s is None else time.monotonic() + timeout_s

    async def score(self, groups: list[dict], timeout_s: float | None = None) -> dict[str, Any]:
        """Raw rewards, a list per `{prompt, images, responses}` group (at most `max_batch_size` responses
        in all), unless `timeout_s` runs out before their batch runs."""
        return await self._score_batch(groups, self._deadline(timeout_s))

    async def compare(self, pairs: list[dict], timeout_s: float | None = None) -> dict[str, Any]:
        """(chosen, rejected) raw rewards for pairs, from the packed pair forward."""
        return await self._compare_batch(pairs, self._deadline(timeout_s))

    def info(self) -> dict[str, Any]:
        batches = sum(self._batch_sizes.values())
        items = sum(k * v for k, v in self._batch_sizes.items())
        return {"name": self.name, **(self._scorer.describe() if self._scorer else {}),
                "max_batch_size": self.max_batch_size,
                "stats": {"calls": self._requests, "expired_calls": self._expired, "batches": batches, "items": items,
                          "mean_batch_items": items / batches if batches else 0.0,
                          "max_batch_items": max(self._batch_sizes, default=0)}}
