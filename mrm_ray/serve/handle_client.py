"""Ray-native clients: a job on the reward app's own Ray cluster (a GRPO job, veRL's reward workers) scores
through the application's `DeploymentHandle` (`serve.get_app_handle`), no HTTP, no proxy.

`HandleRewardClient` has `RewardClient`'s interface (`score`, `rewards`, `compare`, `models`) and
`AsyncHandleRewardClient` `AsyncRewardClient`'s (`async with`, `await score(...)`): the same grouping of a
rollout group's items by prompt, the same chunking, the same answers (the ingress's `call` runs the HTTP
routes' checks, aggregation, shedding and deadline) and the same retries: a shed request (503 with its
`Retry-After`), a passed deadline or a replica being replaced is sent again under `Backoff`, a 4xx raises
`RewardError` naming the field at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from mrm_ray.serve.client import (RETRY_STATUS, Backoff, ChunkedRoutes, RewardError, aggregation, encode_items,
                                  group_items)


class _HandleBase:
    def __init__(self, app_name: str = "reward", *, token: str | None = None, retries: int = 3,
                 max_wait_s: float | None = None, chunk_items: int = 64) -> None:
        from ray import serve

        self.app_name = app_name
        self.handle = serve.get_app_handle(app_name)
        self.authorization = f"Bearer {token}" if token else None
        self.retries, self.max_wait_s, self.chunk_items = retries, max_wait_s, chunk_items

    @staticmethod
    def _outcome(answer: dict | None, error: Exception | None) -> tuple[dict | None, Exception | None, float | None]:
        """(body to return, error to raise or retry, Retry-After) of one attempt."""
        if error is not None:
            return None, error, None
        if answer["status"] == 200:
            return answer["body"], None, None
        exc = RewardError(answer["status"], str(answer["body"]))
        if answer["status"] not in RETRY_STATUS:
            raise exc
        return None, exc, answer.get("retry_after")


def _retryable(exc: Exception) -> bool:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    return isinstance(exc, (RayActorError, BackPressureError))


class HandleRewardClient(_HandleBase, ChunkedRoutes):
    """Synchronous: `HandleRewardClient("reward").score(items)` -> one result dict per item."""

    def _send(self, route: str, body: dict | None = None) -> dict:
        backoff = Backoff(self.retries, self.max_wait_s)
        while True:
            answer, error = None, None
            try:
                answer = self.handle.call.remote(route, body, None, self.authorization).result()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                error = exc
            out, error, asked = self._outcome(answer, error)
            if out is not None:
                return out
            delay = backoff.delay(asked)
            if delay is None:
                raise error
            time.sleep(delay)

    def models(self) -> dict:
        return self._send("models")


class AsyncHandleRewardClient(_HandleBase):
    """asyncio: `async with AsyncHandleRewardClient("reward") as c: await c.score(items)`."""

    async def __aenter__(self) -> "AsyncHandleRewardClient":
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def _call(self, route: str, body: dict | None = None, timeout_s: float | None = None) -> dict:
        backoff = Backoff(self.retries, self.max_wait_s)
        while True:
            answer, error = None, None
            try:
                answer = await self.handle.call.remote(route, body, timeout_s, self.authorization)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                error = exc
            out, error, asked = self._outcome(answer, error)
            if out is not None:
                return out
            delay = backoff.delay(asked)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def models(self) -> dict:
        return await self._call("models")

    async def score(self, items: Sequence[dict], *, reward: str = "model", timeout_s: float | None = None,
                    method: str | None = None, uncertainty_coef: float | None = None) -> list[dict]:
        payload = {"items": encode_items(group_items(items)), "reward": reward,
                   **aggregation(method, uncertainty_coef)}
        return (await self._call("score", payload, timeout_s))["results"]
