"""A mixture's sampling: how many pairs each source gives, and the held-out split (its schema and file:
config/mixture.py)."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from mrm_ray.config import MixtureConfig, load

logger = logging.getLogger(__name__)


def load_mixture(path_or_name, *, paths: dict[str, str] | None = None, options: dict[str, dict] | None = None,
                 skip_missing: bool = False) -> MixtureConfig:
    """A mixture YAML, or a shipped one by name, through the one loader (config/mixture.py says how its
    paths are filled in and resolved)."""
    return load(MixtureConfig, path_or_name, kind="mixture", paths=paths, options=options, skip_missing=skip_missing)


def plan_counts(config: MixtureConfig, available: dict[str, int]) -> dict[str, int]:
    """How many pairs to take from each source, given how many good pairs each has."""
    counts: dict[str, int] = {}
    ratios = [s for s in config.sources if s.is_ratio]
    fixed = [s for s in config.sources if not s.is_ratio]
    for s in fixed:
        counts[s.name] = available[s.name] if s.weight == "all" else int(s.weight)
    if ratios and config.total:
        for s in ratios:
            counts[s.name] = int(round(s.weight * config.total))
    elif ratios:  # all ratios, no total: the largest mixture with no source repeated
        share = sum(s.weight for s in ratios)
        total = min(math.floor(available[s.name] * share / s.weight) for s in ratios)
        for s in ratios:
            counts[s.name] = min(available[s.name], int(round(s.weight / share * total)))
    for s in config.sources:
        if counts[s.name] > available[s.name]:
            logger.warning("source %s: %d pairs asked, %d available: pairs will repeat",
                           s.name, counts[s.name], available[s.name])
    return counts


def unit_hash(*parts: Any) -> float:
    """A stable number in [0, 1) from the parts (independent of Python's hash seed)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_held_out(pair_id: str, source: str, *, fraction: float, seed: int) -> bool:
    """Whether a pair is in the held-out split: fixed by its id, so it never moves between runs."""
    return fraction > 0 and unit_hash("held-out", seed, source, pair_id) < fraction
