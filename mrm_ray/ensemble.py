"""Reward ensembles: the `ensemble.yaml` config and pure aggregation over member scores.

BaseReward found that a plain mean of member scores beats weighting members by validation
accuracy or by confidence, and that text-only inputs are best routed to text members.
Scores are `(members, items)` arrays holding NaN where a member did not score an item
(it was routed elsewhere), so every function works over the members that did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mrm_ray.config import config_dataclass, validate
from mrm_ray.model.reward_checkpoint import check_reference, tiny_seed
from mrm_ray.storage import is_uri, join, local_copy

METHODS = ("mean", "z_mean", "accuracy_weighted", "confidence_weighted")
MODALITIES = ("image", "text")  # an item with any image is "image", else "text"


@config_dataclass
class EnsembleMember:
    """One reward checkpoint in the ensemble."""

    name: str
    path: str  # a reward checkpoint directory, an s3:// URI of one, or tiny:SEED (model/reward_checkpoint.py)
    weight: float = 1.0  # used by the *_weighted methods; `mrm-ray ensemble fit` sets it
    modalities: tuple[str, ...] = MODALITIES  # which inputs this member scores
    score_mean: float | None = None  # z-normalisation; None = the checkpoint's reward_config.json
    score_std: float | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"member name must be non-empty without '/', got {self.name!r}")
        tiny_seed(self.path)
        if bad := set(self.modalities) - set(MODALITIES):
            raise ValueError(f"member {self.name}: unknown modalities {sorted(bad)} (use {MODALITIES})")
        if self.weight < 0:
            raise ValueError(f"member {self.name}: weight must be >= 0, got {self.weight}")
        if self.score_std is not None and self.score_std <= 0:
            raise ValueError(f"member {self.name}: score_std must be > 0, got {self.score_std}")


@config_dataclass
class EnsembleConfig:
    """What `ensemble.yaml` holds: members, aggregation method, and how it was fitted."""

    members: tuple[EnsembleMember, ...]
    method: str = "mean"
    fitted_on: dict = field(default_factory=dict)  # validation set and per-member metrics, for the record

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")
        if self.method not in METHODS:
            raise ValueError(f"ensemble method must be one of {METHODS}, got {self.method!r}")
        for modality in MODALITIES:
            if not any(modality in m.modalities for m in self.members):
                raise ValueError(f"no member scores {modality} inputs; list {modality!r} in some member's modalities")
        if self.method.endswith("_weighted") and not any(m.weight > 0 for m in self.members):
            raise ValueError("every member weight is 0")

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> "EnsembleConfig":
        """Relative member paths resolve against `base_dir` (the YAML's folder, or its URI's)."""
        members = []
        for m in data.get("members") or []:
            m = dict(m)
            path = str(m.get("path", ""))
            if base_dir is not None and path and not is_uri(path) and tiny_seed(path) is None \
                    and not Path(path).expanduser().is_absolute():
                m["path"] = join(str(base_dir), path) if is_uri(str(base_dir)) \
                    else str((Path(base_dir) / path).resolve())
            members.append(m)
        return validate(cls, {**data, "members": members})

    def check_references(self) -> None:
        """Refuse, before anything runs, a member that is no reward checkpoint, or a text-only one given images
        (ValueError naming the member and the setting to change)."""
        for m in self.members:
            check_reference(m.path, modalities=m.modalities, name=m.name)

    def to_dict(self) -> dict:
        return {"method": self.method,
                "members": [{"name": m.name, "path": m.path, "weight": m.weight, "modalities": list(m.modalities),
                             "score_mean": m.score_mean, "score_std": m.score_std} for m in self.members],
                "fitted_on": self.fitted_on}


def load_ensemble(path: str | Path) -> EnsembleConfig:
    """An ensemble.yaml, local or at an object-store URI."""
    import yaml

    if is_uri(path):
        return EnsembleConfig.from_dict(yaml.safe_load(local_copy(str(path)).read_text()) or {},
                                        base_dir=str(path).rsplit("/", 1)[0])
    path = Path(path)
    return EnsembleConfig.from_dict(yaml.safe_load(path.read_text()) or {}, base_dir=path.parent)


def save_ensemble(config: EnsembleConfig, path: str | Path) -> Path:
    import yaml

    from mrm_ray.atomic import atomic_file

    with atomic_file(path) as f:
        f.write("# reward ensemble: serve with `serve run` / jobs/serve.py --ensemble THIS_FILE\n")
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
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
              means: Sequence[float] | None = None, stds: Sequence[float] | None = None) -> Aggregate:
    """Combine (members, items) scores, NaN = not scored, into one reward per item.

    mean: plain mean of raw scores (the paper's best). z_mean: mean of z-normalised scores.
    *_weighted: weighted mean of z-normalised scores (weights compare like with like only on
    one scale), renormalised over the members that scored each item.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (members, items), got shape {scores.shape}")
    if method != "mean":
        if means is None or stds is None:
            raise ValueError(f"method {method} needs each member's score mean and std")
        scores = z_normalize(scores, means, stds)
    w = np.ones(len(scores)) if method in ("mean", "z_mean") or weights is None else np.asarray(weights, np.float64)
    present = ~np.isnan(scores)
    if not present.any(axis=0).all():
        raise ValueError("some item was scored by no member")
    wm = np.where(present, w[:, None], 0.0)
    total = wm.sum(axis=0)
    if (total <= 0).any():
        raise ValueError("some item was scored only by members of weight 0")
    filled = np.where(present, scores, 0.0)
    reward = (wm * filled).sum(axis=0) / total
    var = (wm * (filled - reward) ** 2).sum(axis=0) / total
    return Aggregate(reward=reward, std=np.sqrt(var))


def fit_weights(chosen: np.ndarray, rejected: np.ndarray, *, method: str,
                means: Sequence[float] | None = None, stds: Sequence[float] | None = None) -> np.ndarray:
    """Per-member weights from (members, pairs) validation scores.

    accuracy_weighted: pairwise accuracy (ties count as wrong). confidence_weighted: mean
    z-normalised chosen-minus-rejected margin, floored at 0 (a member that prefers the
    rejected side on average gets no say). mean/z_mean: equal weights.
    """
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    if method in ("mean", "z_mean"):
        return np.ones(len(chosen))
    if method == "accuracy_weighted":
        return (chosen > rejected).mean(axis=1)
    if method == "confidence_weighted":
        if means is None or stds is None:
            raise ValueError("confidence_weighted needs each member's score mean and std")
        margin = z_normalize(chosen, means, stds) - z_normalize(rejected, means, stds)
        return np.maximum(margin.mean(axis=1), 0.0)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
