"""Reward ensembles: pure aggregation over member scores, and reading and writing `ensemble.yaml`
(its schema: config/ensemble.py).

BaseReward found that a plain mean of member scores beats weighting members by validation
accuracy or by confidence, and that text-only inputs are best routed to text members.
Scores are `(members, items)` arrays holding NaN where a member did not score an item
(it was routed elsewhere), so every function works over the members that did.

For RL the conservative methods turn the members' disagreement into a penalty, so that a
policy gains nothing from what only some members reward (Coste et al., ICLR 2024, "Reward
Model Ensembles Help Mitigate Overoptimization"), over z-normalised scores:
`min` (worst case), `uwo` (mean - coef x variance) and `lcb` (mean - coef x std); the
variance is the population variance over the members that scored the item, so one member
reduces each to its own z-score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrm_ray.config import CONSERVATIVE_METHODS, METHODS, UNCERTAINTY_COEF, EnsembleConfig, load


def load_ensemble(path: str | Path) -> EnsembleConfig:
    """An ensemble.yaml, local or at an object-store URI, through the one loader (member paths relative to it)."""
    return load(EnsembleConfig, path)


def save_ensemble(config: EnsembleConfig, path: str | Path) -> Path:
    import yaml

    from mrm_ray.atomic import atomic_file

    with atomic_file(path) as f:
        f.write("# reward ensemble: serve with `mrm-ray serve --ensemble THIS_FILE` (schema: config/ensemble.py)\n")
        yaml.safe_dump(config.to_yaml_dict(), f, sort_keys=False)
    return Path(path)


# ------------------------------------------------------------------------------ aggregation
def routing_mask(modalities: Sequence[Sequence[str]], has_image: Sequence[bool]) -> np.ndarray:
    """(members, items) bool: which member scores which item."""
    has_image = np.asarray(has_image, dtype=bool)
    wants_image = np.array(["image" in m for m in modalities])[:, None]
    wants_text = np.array(["text" in m for m in modalities])[:, None]
    return np.where(has_image[None, :], wants_image, wants_text)


def z_normalize(scores: np.ndarray, means: Sequence[float], stds: Sequence[float]) -> np.ndarray:
    """(members, items) scores on each member's own standard scale."""
    return (np.asarray(scores, dtype=np.float64) - np.asarray(means, dtype=np.float64)[:, None]) \
        / np.asarray(stds, dtype=np.float64)[:, None]


@dataclass(frozen=True)
class Aggregate:
    reward: np.ndarray  # (items,) the ensemble's reward
    std: np.ndarray  # (items,) disagreement: (weighted) std across members, on the reward's scale


def aggregate(scores: np.ndarray, *, method: str = "mean", weights: Sequence[float] | None = None,
              means: Sequence[float] | None = None, stds: Sequence[float] | None = None,
              uncertainty_coef: float = UNCERTAINTY_COEF) -> Aggregate:
    """Combine (members, items) scores, NaN = not scored, into one reward per item.

    mean: plain mean of raw scores (the paper's best). z_mean: mean of z-normalised scores.
    *_weighted: weighted mean of z-normalised scores (weights compare like with like only on
    one scale), renormalised over the members that scored each item. min, uwo, lcb: the
    conservative methods (module docstring) over z-normalised scores, equal weights. `std` is
    the members' (weighted) spread around their mean on the scale they were combined on.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (np.isfinite(uncertainty_coef) and uncertainty_coef >= 0):
        raise ValueError(f"uncertainty_coef must be a finite number >= 0, got {uncertainty_coef!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (members, items), got shape {scores.shape}")
    if method != "mean":
        if means is None or stds is None:
            raise ValueError(f"method {method} needs each member's score mean and std")
        scores = z_normalize(scores, means, stds)
    weighted = method.endswith("_weighted") and weights is not None
    w = np.asarray(weights, np.float64) if weighted else np.ones(len(scores))
    present = ~np.isnan(scores)
    if not present.any(axis=0).all():
        raise ValueError("some item was scored by no member")
    wm = np.where(present, w[:, None], 0.0)
    total = wm.sum(axis=0)
    if (total <= 0).any():
        raise ValueError("some item was scored only by members of weight 0")
    filled = np.where(present, scores, 0.0)
    mean = (wm * filled).sum(axis=0) / total
    var = (wm * (filled - mean) ** 2).sum(axis=0) / total
    reward = {"min": lambda: np.where(present, scores, np.inf).min(axis=0),
              "uwo": lambda: mean - uncertainty_coef * var,
              "lcb": lambda: mean - uncertainty_coef * np.sqrt(var)}.get(method, lambda: mean)()
    return Aggregate(reward=reward, std=np.sqrt(var))


def fit_weights(chosen: np.ndarray, rejected: np.ndarray, *, method: str,
                means: Sequence[float] | None = None, stds: Sequence[float] | None = None) -> np.ndarray:
    """Per-member weights from (members, pairs) validation scores.

    accuracy_weighted: pairwise accuracy (ties count as wrong). confidence_weighted: mean
    z-normalised chosen-minus-rejected margin, floored at 0 (a member that prefers the
    rejected side on average gets no say). The others: equal weights.
    """
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    if method in ("mean", "z_mean", *CONSERVATIVE_METHODS):
        return np.ones(len(chosen))
    if method == "accuracy_weighted":
        return (chosen > rejected).mean(axis=1)
    if method == "confidence_weighted":
        if means is None or stds is None:
            raise ValueError("confidence_weighted needs each member's score mean and std")
        margin = z_normalize(chosen, means, stds) - z_normalize(rejected, means, stds)
        return np.maximum(margin.mean(axis=1), 0.0)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
