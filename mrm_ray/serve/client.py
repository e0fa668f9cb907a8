"""Python clients for the reward endpoint, for RL rollout workers.

Images may be given as bytes, PIL images, base64 or local files; they are sent inline. Requests larger than the
server's item limit are split. A failed request (429/502/503/504, a dropped connection) is sent
again after the `Retry-After` the server asks for when it sheds load, else after a backoff;
`retries` more times or, with `max_wait_s`, until that many seconds have passed. `timeout_s` on
a call sends it as the request's deadline (`X-Request-Timeout`): past it, the server drops the
request instead of computing it.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RETRY_STATUS = (429, 502, 503, 504)
TIMEOUT_HEADER = "X-Request-Timeout"  # the server's api.TIMEOUT_HEADER (the client does not import the server)


def retry_after(headers: Any) -> float | None:
    """The seconds a `Retry-After` header asks for (delay-seconds form), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Backoff:
    """When to send a failed request again: after the `Retry-After` the server asked for, else after an
    exponential backoff (0.5, 1, 2, ... 5 s); for `retries` more attempts, or with `max_wait_s` until that
    many seconds have passed since the first attempt."""

    def __init__(self, retries: int, max_wait_s: float | None) -> None:
        self.retries, self.max_wait_s = retries, max_wait_s
        self.start, self.attempt = time.monotonic(), 0

    def delay(self, asked: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        delay = asked if asked is not None else min(0.5 * 2 ** self.attempt, 5.0)
        self.attempt += 1
        if self.max_wait_s is not None:
            return delay if time.monotonic() - self.start < self.max_wait_s else None
        return delay if self.attempt <= self.retries else None


def local_image(image: Any) -> Any:
    """A local image file's bytes when `image` is the path of one (clients read files; the server never does),
    anything else unchanged."""
    if isinstance(image, str) and os.path.isfile(image):
        return Path(image).read_bytes()
    return image


def inline_image(image: Any) -> str:
    """An image as the request carries it (base64): bytes, a PIL image, a `{bytes, path}` struct, a local file
    (read here), or base64 / a data: URL as given (the server checks them)."""
    from mrm_ray.model.inputs import image_bytes

    image = local_image(image)
    return image if isinstance(image, str) else base64.b64encode(image_bytes(image)).decode()


def encode_items(items: Sequence[dict]) -> list[dict]:
    return [{**it, "images": [inline_image(im) for im in it.get("images") or []]} for it in items]


def group_items(items: Sequence[dict], *, max_responses: int = 16) -> list[dict]:
    """Consecutive `{prompt, response, images?, reference?}` items with the same prompt, images and
    reference (a rollout group) as group items `{prompt, responses, images?, reference?}`, so the server
    encodes the prompt and its images once; the results still come one per response, in order. Empty
    responses stay single items (a group refuses them), and a group holds at most `max_responses`."""
    out: list[dict] = []
    key = None
    for it in items:
        if "response" not in it or not str(it["response"]).strip():
            out.append(dict(it))
            key = None
            continue
        this = (it["prompt"], list(it.get("images") or []), it.get("reference"))
        if key is not None and this == key and len(out[-1]["responses"]) < max_responses:
            out[-1]["responses"].append(it["response"])
            continue
        out.append({**{k: v for k, v in it.items() if k != "response"}, "responses": [it["response"]]})
        key = this
    return [{**{k: v for k, v in g.items() if k != "responses"}, "response": g["responses"][0]}
            if len(g.get("responses", ())) == 1 else g for g in out]


def aggregation(method: str | None, uncertainty_coef: float | None) -> dict:
    """The request fields asking for an aggregation other than the ensemble's (none when both are None)."""
    return ({"method": method} if method is not None else {}) | \
        ({"uncertainty_coef": uncertainty_coef} if uncertainty_coef is not None else {})


class RewardError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"reward server answered {status}: {body[:500]}")
        self.status = status


class ChunkedRoutes:
    """`score`, `rewards` and `compare` in chunks of `chunk_items`, over whatever `_send(route, payload)` the
    client has (HTTP here, the app's DeploymentHandle in serve/handle_client.py)."""

    chunk_items: int

    def _send(self, route: str, payload: dict) -> dict:
        raise NotImplementedError

    def score(self, items: Sequence[dict], *, reward: str = "model", method: str | None = None,
              uncertainty_coef: float | None = None) -> list[dict]:
        """`{prompt, response, images?, reference?}` items -> `{reward, scores, std, method, ...}` each; items in
        a row that share a prompt are sent as one group (`group_items`). `method` / `uncertainty_coef`: another
        aggregation than the ensemble's (e.g. "uwo")."""
        out: list[dict] = []
        for start in range(0, len(items), self.chunk_items):
            chunk = encode_items(group_items(items[start:start + self.chunk_items]))
            out += self._send("score", {"items": chunk, "reward": reward,
                                        **aggregation(method, uncertainty_coef)})["results"]
        return out

    def rewards(self, items: Sequence[dict], *, reward: str = "model", method: str | None = None,
                uncertainty_coef: float | None = None) -> list[float]:
        return [r["reward"] for r in self.score(items, reward=reward, method=method,
                                                uncertainty_coef=uncertainty_coef)]

    def compare(self, pairs: Sequence[dict], *, method: str | None = None,
                uncertainty_coef: float | None = None) -> list[dict]:
        out: list[dict] = []
        for start in range(0, len(pairs), self.chunk_items):
            out += self._send("compare", {"pairs": encode_items(pairs[start:start + self.chunk_items]),
                                          **aggregation(method, uncertainty_coef)})["results"]
        return out


class RewardClient(ChunkedRoutes):
    """Synchronous client: `RewardClient(url).score(items)` -> one result dict per item."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0, retries: int = 3,
                 max_wait_s: float | None = None, chunk_items: int = 64) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout, self.retries, self.max_wait_s, self.chunk_items = timeout, retries, max_wait_s, chunk_items

    def _post(self, path: str, payload: dict) -> dict:
        import requests

        backoff = Backoff(self.retries, self.max_wait_s)
        while True:
            asked = None
            try:
                response = self.session.post(self.url + path, json=payload, timeout=self.timeout)
            except requests.ConnectionError as exc:
                error: Exception = exc
            else:
                if response.status_code == 200:
                    return response.json()
                error = RewardError(response.status_code, response.text)
                if response.status_code not in RETRY_STATUS:
                    raise error
                asked = retry_after(response.headers)
            delay = backoff.delay(asked)
            if delay is None:
                raise error
            time.sleep(delay)

    def _send(self, route: str, payload: dict) -> dict:
        return self._post(f"/v1/{route}", payload)

    def models(self) -> dict:
        response = self.session.get(self.url + "/v1/models", timeout=self.timeout)
        if response.status_code != 200:
            raise RewardError(response.status_code, response.text)
        return response.json()


class AsyncRewardClient:
    """asyncio client (aiohttp) for rollout loops that keep many requests in flight."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 120.0, retries: int = 3,
                 max_connections: int = 256, max_wait_s: float | None = None) -> None:
        """`retries` bounds the attempts after the first; with `max_wait_s` they go on (backing off
        up to 5 s, or as long as `Retry-After` asks) until that many seconds have passed instead."""
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout, self.retries, self.max_connections = timeout, retries, max_connections
        self.max_wait_s = max_wait_s
        self._session = None

    async def __aenter__(self) -> "AsyncRewardClient":
        import aiohttp

        # aiohttp's default pool holds 100 connections: lift it, or concurrency silently caps there
        self._session = aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.max_connections))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._session.close()

    async def models(self) -> dict:
        """`/v1/models`: the ensemble's method, members and limits."""
        async with self._session.get(self.url + "/v1/models") as response:
            if response.status != 200:
                raise RewardError(response.status, await response.text())
            return await response.json()

    async def score(self, items: Sequence[dict], *, reward: str = "model", timeout_s: float | None = None,
                    method: str | None = None, uncertainty_coef: float | None = None) -> list[dict]:
        """`{prompt, response, images?, reference?}` items -> `{reward, scores, std, method, ...}` each (items
        in a row sharing a prompt go as one group); with `timeout_s`, each attempt carries it as its deadline
        (`X-Request-Timeout`); `method` / `uncertainty_coef` as `RewardClient.score`'s."""
        import asyncio

        import aiohttp

        payload = {"items": encode_items(group_items(items)), "reward": reward,
                   **aggregation(method, uncertainty_coef)}
        headers = {TIMEOUT_HEADER: f"{timeout_s:g}"} if timeout_s is not None else None
        backoff = Backoff(self.retries, self.max_wait_s)
        while True:
            asked = None
            try:
                async with self._session.post(self.url + "/v1/score", json=payload, headers=headers) as response:
                    if response.status == 200:
                        return (await response.json())["results"]
                    error: Exception = RewardError(response.status, await response.text())
                    if response.status not in RETRY_STATUS:
                        raise error
                    asked = retry_after(response.headers)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:  # refused, dropped, timed out
                error = exc
            delay = backoff.delay(asked)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
