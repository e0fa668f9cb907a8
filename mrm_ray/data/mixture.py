"""A weighted mixture of preference sources, read from YAML, and its held-out split.

    # mrm-ray data inspect my_mixture.yaml
    name: my-mixture
    seed: 0
    held_out_fraction: 0.02     # per source, by a hash of the pair id (stable across runs)
    total: null                 # pairs in the mixture when weights are ratios
    sources:
      - {name: rlaif-v, reader: hf_rlaif_v, path: /data/RLAIF-V, weight: all}
      - {name: ultra-hard, reader: ultrafeedback_ultra_hard, path: /data/uf.jsonl, weight: 0.25}
      - {name: tulu-if, reader: trl, path: /data/tulu_if.parquet, weight: 20000}

A weight is "all", a fixed count (an int), or a ratio (a float in (0, 1]) of `total`.
When every weight is a ratio and `total` is unset, ratios are shares of the mixture
(normalised to sum to 1) and the mixture is the largest that repeats no source. A count
above what a source has repeats its pairs (with a warning).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from mrm_ray.config import ConfigError, config_dataclass, validate

logger = logging.getLogger(__name__)


@config_dataclass
class SourceConfig:
    name: str
    reader: str
    path: str
    weight: Any = "all"  # "all" | int count | float ratio
    options: dict = field(default_factory=dict)  # reader keyword options (image_root, split, ...)

    def __post_init__(self) -> None:
        w = self.weight
        ok = w == "all" or (isinstance(w, int) and not isinstance(w, bool) and w > 0) or (
            isinstance(w, float) and 0 < w <= 1)
        if not ok:
            raise ValueError(f"source {self.name!r}: weight must be 'all', a positive count or a ratio in "
                             f"(0, 1], got {w!r}")

    @property
    def is_ratio(self) -> bool:
        return isinstance(self.weight, float)


@config_dataclass
class MixtureConfig:
    name: str = "mixture"
    sources: tuple[SourceConfig, ...] = ()
    held_out_fraction: float = 0.0
    total: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not 0 <= self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        ratio = sum(s.weight for s in self.sources if s.is_ratio)
        if ratio > 1 + 1e-9:
            raise ValueError(f"ratios add up to {ratio:.3f} > 1")
        if any(s.is_ratio for s in self.sources) and not all(s.is_ratio for s in self.sources) and not self.total:
            raise ValueError("mixing ratios with counts or 'all' needs `total` (the mixture's size)")


def shipped_mixtures() -> list[str]:
    from mrm_ray import presets

    return presets.names("mixture")


def load_mixture(path_or_name: str | Path, *, paths: dict[str, str] | None = None,
                 options: dict[str, dict] | None = None, skip_missing: bool = False) -> MixtureConfig:
    """Read a mixture YAML, or a shipped one by name; relative paths resolve against its folder.

    `paths` and `options` ({source: {key: value}}) override by source name (how a user
    fills in a shipped recipe); `skip_missing` drops sources left without a path.
    """
    from mrm_ray import presets

    path = presets.config_file("mixture", str(path_or_name))
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list):
        raise ConfigError(f"{path}: a mixture YAML needs a `sources:` list")
    known = {e.get("name") for e in raw["sources"]}
    for name in {**(paths or {}), **(options or {})}:
        if name not in known:
            raise ConfigError(f"{path}: no source named {name!r}; sources: {sorted(known)}")
    sources, missing = [], []
    for entry in raw.pop("sources"):
        entry = dict(entry)
        name = entry.get("name")
        entry["path"] = (paths or {}).get(name, entry.get("path"))
        entry["options"] = {k: v for k, v in {**entry.get("options", {}), **(options or {}).get(name, {})}.items()
                            if v not in ("", None)}  # an empty value in a recipe means "not set"
        if not entry["path"]:
            missing.append(name)
            continue
        entry["path"] = _resolve(path.parent, entry["path"])
        if entry["options"].get("image_root"):
            entry["options"]["image_root"] = _resolve(path.parent, entry["options"]["image_root"])
        sources.append(entry)
    if missing and not skip_missing:
        raise ConfigError(f"{path}: sources {missing} have no path; fill them in (mixture_paths.{missing[0]}=/data/... "
                          f"for training, --path {missing[0]}=/data/... for `mrm-ray data`) or skip them (--skip-missing)")
    for name in missing:
        logger.warning("mixture %s: source %s has no path and is skipped", raw.get("name", path.stem), name)
    return validate(MixtureConfig, {**raw, "sources": sources}, where=str(path))


def _resolve(base: Path, value: str) -> str:
    return value if Path(value).is_absolute() else str((base / value).resolve())


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
