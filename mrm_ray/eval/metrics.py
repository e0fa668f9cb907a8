"""Benchmark metrics exactly as published; pure functions over per-pair correctness.

A pair is correct when reward(chosen) > reward(rejected): a tie counts as wrong. Values
are fractions; reports print them as percentages with two decimals, the way papers do
(156 of 170 pairs -> 91.76).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

# VL-RewardBench's published category sizes: the reference a reader's categorisation must meet
VL_REWARDBENCH_SIZES = {"general": 183, "hallucination": 749, "reasoning": 318}


def correct(chosen: Sequence[float], rejected: Sequence[float]) -> np.ndarray:
    """(pairs,) bool: chosen strictly above rejected. NaN scores (unscored) are wrong."""
    return np.asarray(chosen, dtype=np.float64) > np.asarray(rejected, dtype=np.float64)


def _by(keys: Sequence[str], ok: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for key, value in zip(keys, ok):
        groups[str(key)].append(bool(value))
    return ({k: sum(v) / len(v) for k, v in sorted(groups.items())}, {k: len(v) for k, v in sorted(groups.items())})


def pairwise(ok: Sequence[bool], sources: Sequence[str]) -> dict:
    """Plain pairwise accuracy, overall and per source."""
    ok = np.asarray(ok, dtype=bool)
    per, counts = _by(sources, ok)
    return {"accuracy": float(ok.mean()) if len(ok) else float("nan"), "per_source": per, "counts": counts}


def mm_rlhf(ok: Sequence[bool], group_ids: Sequence[str], categories: Sequence[str]) -> dict:
    """MM-RLHF-RewardBench: Acc over pairs, Acc+ over ids whose pairs are all correct, per category."""
    ok = np.asarray(ok, dtype=bool)
    by_id: dict[str, bool] = {}
    for gid, value in zip(group_ids, ok):
        by_id[str(gid)] = by_id.get(str(gid), True) and bool(value)
    per, counts = _by(categories, ok)
    return {"Acc": float(ok.mean()), "Acc+": sum(by_id.values()) / len(by_id), "per_category": per,
            "counts": {"pairs": len(ok), "ids": len(by_id), **counts}}


def vl_rewardbench(ok: Sequence[bool], categories: Sequence[str]) -> dict:
    """VL-RewardBench: Overall over pairs; Macro = mean of the three category accuracies."""
    ok = np.asarray(ok, dtype=bool)
    per, counts = _by(categories, ok)
    if set(per) - set(VL_REWARDBENCH_SIZES):
        raise ValueError(f"unknown VL-RewardBench categories {sorted(set(per) - set(VL_REWARDBENCH_SIZES))}")
    macro = float(np.mean([per[c] for c in VL_REWARDBENCH_SIZES if c in per]))
    return {"Overall": float(ok.mean()), "Macro": macro, "per_category": per,
            "counts": {"pairs": len(ok), **counts},
            "published_sizes_met": all(counts.get(c) == n for c, n in VL_REWARDBENCH_SIZES.items())}


def multimodal_rewardbench(ok: Sequence[bool], categories: Sequence[str]) -> dict:
    """Multimodal RewardBench: overall accuracy and per category (safety/reasoning split as published)."""
    ok = np.asarray(ok, dtype=bool)
    per, counts = _by(categories, ok)
    return {"Overall": float(ok.mean()), "per_category": per, "counts": {"pairs": len(ok), **counts}}


def mmrb2(ok: Sequence[bool], categories: Sequence[str]) -> dict:
    """Multimodal RewardBench 2's accuracy (its `compute_accuracy.py`): every pair judged in both orders,
    each order counted. A reward model scores each response alone, so both orders agree and the
    figure is the share of pairs with reward(chosen) > reward(other); per category = `prompt_source`."""
    ok = np.asarray(ok, dtype=bool)
    per, counts = _by(categories, ok)
    return {"Reasoning": float(ok.mean()), "per_category": per, "counts": {"pairs": len(ok), **counts}}


def percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.2f}"


def reliability(margins: Sequence[float], bins: int = 10) -> dict:
    """Calibration of `prob_chosen = sigmoid(margin)` (what `/v1/compare` returns) as a reliability diagram.

    Each pair is counted in both orders, (p, chosen preferred) and (1 - p, not), so the diagram
    is symmetric about 0.5 and a model that is always right but unsure shows as under-confident.
    Per equal-width bin of probability: pairs counted, mean predicted probability, observed
    frequency (None for an empty bin); `ece` is the count-weighted mean |observed - predicted|.
    """
    margins = np.asarray(margins, dtype=np.float64)
    prob = 1.0 / (1.0 + np.exp(-np.clip(margins[np.isfinite(margins)], -50, 50)))
    p = np.concatenate([prob, 1.0 - prob])
    y = np.concatenate([np.ones(len(prob)), np.zeros(len(prob))])
    which = np.minimum((p * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        mean_p, observed = (float(p[sel].mean()), float(y[sel].mean())) if n else (None, None)
        if n:
            ece += n * abs(observed - mean_p)
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": n, "mean_prob": mean_p, "observed": observed})
    return {"bins": out, "ece": ece / len(p) if len(p) else float("nan"), "pairs": len(prob)}
