"""Fit an ensemble on validation pairs and write the `ensemble.yaml` serving reads.

Every member scores the validation pairs (Ray Data, as evaluation does); the file records
the method, per-member weights (validation accuracy, or mean z-normalised margin), the
members' score mean/std on the validation pairs (for z-normalisation), text routing, and
what it was fitted on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
import numpy as np

from mrm_ray.ensemble import MODALITIES, EnsembleConfig, EnsembleMember, fit_weights


def fit_ensemble(members: Mapping[str, str], data: Sequence[tuple[str, str]], *, method: str = "mean",
                 text_members: Sequence[str] = (), image_root: str | None = None, batch_size: int = 16,
                 limit: int | None = None) -> EnsembleConfig:
    """With `text_members`, text-only inputs go to those members only and image inputs to the others
    (BaseReward's routing); without, every member scores everything."""
    from mrm_ray.eval import metrics
    from mrm_ray.eval.report import EvalOptions, load_benchmarks
    from mrm_ray.eval.scoring import score_pairs_on_ray

    if unknown := set(text_members) - set(members):
        raise ValueError(f"text members {sorted(unknown)} are not among the members {sorted(members)}")
    per, rows = load_benchmarks(data, EvalOptions(image_root=image_root, limit=limit))
    if errors := [f"{n} ({d['path']}): {d['error']}" for n, d in per.items() if d["error"]]:
        raise ValueError("could not read the validation data: " + "; ".join(errors))
    if not rows:
        raise ValueError("no usable validation pairs: " + "; ".join(
            f"{n}: {len(d['bad'])} bad" for n, d in per.items()))
    scores = score_pairs_on_ray(rows, members, batch_size=batch_size)
    names = list(members)
    scored = np.ones(len(rows), dtype=bool)
    for n in names:
        scored &= np.array([e is None for e in scores[n]["errors"]])
    chosen = np.stack([scores[n]["chosen"][scored] for n in names])
    rejected = np.stack([scores[n]["rejected"][scored] for n in names])
    both = np.concatenate([chosen, rejected], axis=1)
    means, stds = both.mean(axis=1), np.maximum(both.std(axis=1), 1e-6)
    weights = fit_weights(chosen, rejected, method=method, means=means, stds=stds)
    if method.endswith("_weighted") and not (weights > 0).any():
        raise ValueError(f"every member got weight 0 under {method}: no member beats chance on this data")
    accuracy = {n: float(metrics.correct(chosen[m], rejected[m]).mean()) for m, n in enumerate(names)}
    return EnsembleConfig(method=method, members=[
        EnsembleMember(name=n, path=str(members[n]), weight=round(float(weights[m]), 6),
                       modalities=MODALITIES if not text_members else ("text",) if n in text_members else ("image",),
                       score_mean=round(float(means[m]), 6), score_std=round(float(stds[m]), 6))
        for m, n in enumerate(names)],
        fitted_on={"data": {n: str(p) for n, p in data}, "pairs": int(scored.sum()),
                   "left_out": int(len(rows) - scored.sum() + sum(len(d["bad"]) for d in per.values())),
                   "left_out_reasons": dict(Counter(
                       [b["reason"].split(":")[0] for d in per.values() for b in d["bad"]]
                       + [f"{n}: {e[:80]}" for n in names for e in scores[n]["errors"] if e is not None])),
                   "accuracy": accuracy})
