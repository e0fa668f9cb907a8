"""Fit an ensemble on validation pairs and write the `ensemble.yaml` serving reads.

Every member scores the validation pairs (Ray Data, as evaluation does); the file records
the method, per-member weights (validation accuracy, or mean z-normalised margin), the
members' score mean/std on the validation pairs (for z-normalisation), text routing, and
what it was fitted on. A text-only member is fitted on the text-only pairs and routed text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from mrm_ray.config import MODALITIES, EnsembleConfig, EnsembleMember, FitConfig
from mrm_ray.ensemble import fit_weights, routing_mask


def fit_ensemble(config: FitConfig) -> EnsembleConfig:
    """With `text_members`, text-only inputs go to those members only and image inputs to the others
    (BaseReward's routing); without, every member scores everything it can (a text-only backbone
    scores the text-only inputs)."""
    from mrm_ray.eval.report import load_benchmarks
    from mrm_ray.eval.scoring import has_images, score_pairs_on_ray

    per, rows = load_benchmarks(config.data, image_root=config.image_root, limit=config.limit)
    if errors := [f"{n} ({d['path']}): {d['error']}" for n, d in per.items() if d["error"]]:
        raise ValueError("could not read the validation data: " + "; ".join(errors))
    if not rows:
        raise ValueError("no usable validation pairs: " + "; ".join(
            f"{n}: {len(d['bad'])} bad" for n, d in per.items()))
    scores = score_pairs_on_ray(rows, {n: {"path": p} for n, p in config.models.items()}, batch_size=config.batch_size)
    bad = [b.reason.split(":")[0] for d in per.values() for b in d["bad"]]
    return fit_scores(config.models, scores, [has_images(r) for r in rows], method=config.method,
                      text_members=config.text_members, data=dict(config.data), bad=bad)


def fit_scores(members: Mapping[str, str], scores: Mapping[str, dict], has_image: Sequence[bool], *, method: str,
               text_members: Sequence[str] = (), data: Mapping[str, str], bad: Sequence[str] = ()) -> EnsembleConfig:
    """The ensemble from every member's validation scores (`score_pairs_on_ray`'s output) of pairs with
    and without images: each member's weight and score mean/std over the pairs it is routed and scored;
    a text-only backbone is routed text only."""
    from mrm_ray.eval import metrics

    names = list(members)
    modalities = {n: ("text",) if n in text_members or not scores[n]["takes_images"] else
                  ("image",) if text_members else MODALITIES for n in names}
    routed = routing_mask([modalities[n] for n in names], has_image) & np.stack(
        [np.asarray(scores[n]["applicable"], bool) for n in names])
    scored = np.ones(len(has_image), dtype=bool)
    for n in names:
        scored &= np.array([e is None for e in scores[n]["errors"]], dtype=bool)
    nobody = scored & ~routed.any(axis=0)  # image pairs where every member is text-only
    scored &= ~nobody
    means, stds, weights, accuracy = {}, {}, {}, {}
    for n, mine in zip(names, routed & scored):
        if not mine.any():
            raise ValueError(f"member {n} scored none of the validation pairs routed to it ({'/'.join(modalities[n])}"
                             " inputs): add such pairs to the validation data")
        chosen, rejected = scores[n]["chosen"][mine][None], scores[n]["rejected"][mine][None]
        both = np.concatenate([chosen, rejected], axis=1)
        means[n], stds[n] = float(both.mean()), float(max(both.std(), 1e-6))
        weights[n] = float(fit_weights(chosen, rejected, method=method, means=[means[n]], stds=[stds[n]])[0])
        accuracy[n] = float(metrics.correct(chosen[0], rejected[0]).mean())
    if method.endswith("_weighted") and not any(w > 0 for w in weights.values()):
        raise ValueError(f"every member got weight 0 under {method}: no member beats chance on this data")
    left_out = Counter(list(bad) + [f"{n}: {e[:80]}" for n in names for e in scores[n]["errors"] if e is not None])
    if nobody.any():
        left_out["no member takes images"] += int(nobody.sum())
    return EnsembleConfig(method=method, members=[
        EnsembleMember(name=n, path=str(members[n]), weight=round(weights[n], 6), modalities=modalities[n],
                       score_mean=round(means[n], 6), score_std=round(stds[n], 6)) for n in names],
        fitted_on={"data": dict(data), "pairs": int(scored.sum()),
                   "left_out": int(len(scored) - scored.sum() + len(bad)), "left_out_reasons": dict(left_out),
                   "accuracy": accuracy})
