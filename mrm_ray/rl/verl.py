"""veRL reward functions backed by the served reward ensemble.

veRL (0.9) scores rollouts in its reward loop, which calls a custom reward function once per
sample: `compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)`,
awaited when it is a coroutine function. `compute_score` here is that function (it also takes
the legacy batch reward manager's `data_sources=, solution_strs=, ground_truths=, extra_infos=`
call); `compute_score_async` is the same as a coroutine, so that many samples' calls are in
flight at once. Each returns `score` (the reward veRL optimises) plus the ensemble's model reward,
disagreement and per-member scores, which veRL logs.

veRL passes no prompt argument. It is read from `extra_info`: `raw_prompt` (the chat messages
veRL's agent loop puts there, images as PIL images or file paths in `{"type": "image"}` parts),
else `prompt` / `question` / `query` with `images` (base64 strings). Config (veRL 0.9):

    reward.custom_reward_function.path=<site-packages>/mrm_ray/rl/verl.py
    reward.custom_reward_function.name=compute_score_async     # or compute_score
    +reward.custom_reward_function.reward_kwargs.url=http://HOST:8000
    +reward.custom_reward_function.reward_kwargs.reward=hybrid  # or model
    +reward.custom_reward_function.reward_kwargs.method=uwo     # optional: the aggregation (min, uwo, lcb, ...)
    +reward.custom_reward_function.reward_kwargs.token='${oc.env:MRM_SERVE_TOKEN}'   # with a bearer token

(config/adapters.py's `VerlReward`: a misspelt setting is an error naming the closest one.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mrm_ray.config import VerlReward, validate
from mrm_ray.model.inputs import image_reference, is_image_part

PROMPT_KEYS = ("prompt", "question", "query")


def _raw_prompt(messages: Sequence[Mapping]) -> tuple[list[dict], list[Any]]:
    """veRL's chat messages -> (our messages with image placeholders, the images in order: PIL images, bytes,
    base64 or local files, which the client sends inline)."""
    out, images = [], []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            out.append({"role": message["role"], "content": content or ""})
            continue
        parts = []
        for part in content:
            if is_image_part(part):
                images.append(image_reference(part.get("image", part)))
                parts.append({"type": "image"})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part.get("text", "")})
            else:
                raise ValueError(f"unsupported content part in extra_info['raw_prompt']: {part.get('type')!r}")
        out.append({"role": message["role"], "content": parts})
    return out, images


def _item(solution: Any, truth: Any, info: Mapping[str, Any] | None, reward: str, where: str) -> dict:
    info = info or {}
    raw = info.get("raw_prompt")
    if raw is not None and len(raw):
        prompt, images = _raw_prompt(list(raw))
    else:
        key = next((k for k in PROMPT_KEYS if info.get(k) is not None), None)
        if key is None:
            raise ValueError(f"{where} has no prompt: veRL's agent loop puts the chat under extra_info['raw_prompt'];"
                             f" otherwise put the question under one of {PROMPT_KEYS} in extra_info")
        prompt, images = info[key], list(info.get("images") or [])
    item = {"prompt": prompt, "response": str(solution), "images": images}
    if reward == "hybrid" and truth is not None:
        item["reference"] = str(truth)
    return item


def _results(results: list[dict]) -> list[dict[str, float]]:
    # veRL stacks extra keys across the batch: every dict carries the same keys (NaN where not routed)
    members = sorted({name for r in results for name in r["scores"]})
    return [{"score": r["reward"], "model_reward": r["model_reward"], "ensemble_std": r["std"],
             **{f"score/{m}": r["scores"].get(m, math.nan) for m in members}} for r in results]


def _settings(**kwargs: Any) -> VerlReward:
    """veRL's reward_kwargs, checked (a misspelt or missing setting is named, with the closest known one)."""
    return validate(VerlReward, {k: v for k, v in kwargs.items() if v is not None}, where="reward_kwargs")


def compute_score(data_source: Any = None, solution_str: Any = None, ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, *, data_sources: Sequence[str] | None = None,
                  solution_strs: Sequence[str] | None = None, ground_truths: Sequence[Any] | None = None,
                  extra_infos: Sequence[Mapping[str, Any] | None] | None = None, url: str | None = None,
                  token: str | None = None, reward: str | None = None, timeout: float | None = None,
                  chunk_items: int | None = None, method: str | None = None, uncertainty_coef: float | None = None,
                  **_: Any) -> dict[str, float] | list[dict[str, float]]:
    """One sample's `{score, model_reward, ensemble_std, score/<member>...}`, or (called with the batch
    manager's plural arguments) one such dict per response, in order, the batch sent in chunks.

    reward="hybrid" uses the ground truth as the reference answer (1 on a match, else the sigmoid of the
    ensemble reward); "model" returns the ensemble reward itself. A shed request is sent again after the
    server's Retry-After for up to `timeout` seconds. Settings: config/adapters.py's `VerlReward`.
    """
    from mrm_ray.serve.client import RewardClient

    s = _settings(url=url, token=token, reward=reward, timeout=timeout, chunk_items=chunk_items, method=method,
                  uncertainty_coef=uncertainty_coef)
    batch = solution_strs is not None
    if batch:
        items = [_item(sol, t, info, s.reward, f"extra_infos[{i}]")
                 for i, (sol, t, info) in enumerate(zip(solution_strs, ground_truths, extra_infos))]
    else:
        items = [_item(solution_str, ground_truth, extra_info, s.reward, "extra_info")]
    client = RewardClient(s.url, token=s.token, timeout=s.timeout, max_wait_s=s.timeout, chunk_items=s.chunk_items)
    results = _results(client.score(items, reward=s.reward, method=s.method, uncertainty_coef=s.uncertainty_coef))
    return results if batch else results[0]


async def compute_score_async(data_source: Any, solution_str: Any, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, *, url: str | None = None,
                              token: str | None = None, reward: str | None = None, timeout: float | None = None,
                              method: str | None = None, uncertainty_coef: float | None = None,
                              **_: Any) -> dict[str, float]:
    """`compute_score` for one sample as a coroutine: veRL's reward loop awaits it, many at once."""
    from mrm_ray.serve.client import AsyncRewardClient

    s = _settings(url=url, token=token, reward=reward, timeout=timeout, method=method,
                  uncertainty_coef=uncertainty_coef)
    item = _item(solution_str, ground_truth, extra_info, s.reward, "extra_info")
    async with AsyncRewardClient(s.url, token=s.token, timeout=s.timeout, max_wait_s=s.timeout) as client:
        return _results(await client.score([item], reward=s.reward, method=s.method,
                                           uncertainty_coef=s.uncertainty_coef))[0]
