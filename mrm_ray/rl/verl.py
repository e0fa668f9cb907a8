"""A veRL custom reward function backed by the served reward ensemble.

veRL's batch reward manager calls `compute_score(data_sources=, solution_strs=,
ground_truths=, extra_infos=, **reward_kwargs)` once per rollout batch; this sends the
whole batch to `/v1/score` in chunks (one request per chunk, retried on 503s) and returns
one dict per response: `score` (the reward veRL optimises) plus the ensemble's model reward,
disagreement and per-member scores, which veRL logs. veRL does not pass the prompt, so it
is read from `extra_info` (`prompt` or `question`; `images` as base64 strings when the
prompt has them). Config:

    reward_model.reward_manager=batch
    custom_reward_function.path=<site-packages>/mrm_ray/rl/verl.py custom_reward_function.name=compute_score
    +custom_reward_function.reward_kwargs.url=http://HOST:8000 +custom_reward_function.reward_kwargs.reward=hybrid
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

PROMPT_KEYS = ("prompt", "question", "query")


def _prompt(info: Mapping[str, Any] | None, i: int) -> Any:
    for key in PROMPT_KEYS:
        if info and info.get(key) is not None:
            return info[key]
    raise ValueError(f"extra_infos[{i}] has no prompt: put the question under one of {PROMPT_KEYS} in extra_info")


def compute_score(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                  extra_infos: Sequence[Mapping[str, Any] | None], *, url: str | None = None,
                  token: str | None = None, reward: str = "hybrid", timeout: float = 120.0,
                  chunk_items: int = 64, **_: Any) -> list[dict[str, float]]:
    """One `{score, model_reward, ensemble_std, score/<member>...}` per response, in order.

    reward="hybrid" uses each ground truth as the reference answer (1 on a match, else the
    sigmoid of the ensemble reward); "model" returns the ensemble reward itself.
    """
    from mrm_ray.serve.client import RewardClient

    url = url or os.environ.get("MRM_REWARD_URL")
    if not url:
        raise ValueError("no reward server: pass reward_kwargs.url or set MRM_REWARD_URL")
    items = []
    for i, (solution, truth, info) in enumerate(zip(solution_strs, ground_truths, extra_infos)):
        item = {"prompt": _prompt(info, i), "response": str(solution), "images": list((info or {}).get("images") or [])}
        if reward == "hybrid" and truth is not None:
            item["reference"] = str(truth)
        items.append(item)
    client = RewardClient(url, token=token or os.environ.get("MRM_SERVE_TOKEN"), timeout=timeout,
                          chunk_items=chunk_items)
    results = client.score(items, reward=reward)
    members = sorted({name for r in results for name in r["scores"]})
    # veRL stacks extra keys across the batch: every dict carries the same keys (NaN where not routed)
    return [{"score": r["reward"], "model_reward": r["model_reward"], "ensemble_std": r["std"],
             **{f"score/{m}": r["scores"].get(m, math.nan) for m in members}} for r in results]
