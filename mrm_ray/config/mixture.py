"""A weighted mixture of preference sources: what a mixture YAML holds (data/mixture.py samples it).

    # mrm-ray data inspect my_mixture.yaml
    name: my-mixture
    seed: 0
    held_out_fraction: 0.02     # per source, by a hash of the pair id (stable across runs)
    total: null                 # pairs in the mixture when weights are ratios
    sources:
      - {name: rlaif-v, reader: hf_rlaif_v, path: /data/RLAIF-V, weight: all}
      - {name: ultra-hard, reader: ultrafeedback_ultra_hard, path: /data/uf.jsonl, weight: 0.25}
      - {name: tulu-if, reader: trl, path: /data/tulu_if.parquet, weight: 20000}

A weight is "all", a fixed count (an int), or a ratio (a float in (0, 1]) of `total`. Relative paths
resolve against the YAML's folder. A shipped recipe leaves paths empty: `paths` and `options`
({source: {key: value}}) fill them in by source name when it is loaded, and `skip_missing` drops the
sources left without one.
"""

from __future__ import annotations

import logging
from dataclasses import field
from pathlib import Path
from typing import Any

from mrm_ray.config.core import ConfigError, config_dataclass
from mrm_ray.references import anchored

logger = logging.getLogger(__name__)


@config_dataclass
class SourceConfig:
    name: str  # the source's name (per-source counts and held-out accuracy)
    reader: str  # the published format: `mrm-ray data inspect` lists them
    path: str  # a file, folder or s3:// URI; relative to the mixture file
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
    name: str = "mixture"  # the mixture's name
    sources: tuple[SourceConfig, ...] = ()  # the preference datasets, each read by its reader
    held_out_fraction: float = 0.0  # pairs kept aside for held-out evaluation, per source
    total: int | None = None  # the mixture's size, when ratios mix with counts
    seed: int = 0  # sampling and the held-out split

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

    @classmethod
    def from_file(cls, raw: dict, *, file, base, paths: dict[str, str] | None = None,
                  options: dict[str, dict] | None = None, skip_missing: bool = False) -> dict:
        """A mixture file's settings with its sources' paths and options filled in by name, relative paths
        resolved against its folder, and (with `skip_missing`) the sources left without a path dropped."""
        if not isinstance(raw.get("sources"), list):
            raise ConfigError(f"{file}: a mixture YAML needs a `sources:` list")
        known = {e.get("name") for e in raw["sources"] if isinstance(e, dict)}
        for name in {**(paths or {}), **(options or {})}:
            if name not in known:
                raise ConfigError(f"{file}: no source named {name!r}; sources: {sorted(known)}")
        sources, missing = [], []
        for entry in raw["sources"]:
            entry = dict(entry)
            name = entry.get("name")
            entry["path"] = (paths or {}).get(name, entry.get("path"))
            entry["options"] = {k: v for k, v in {**entry.get("options", {}), **(options or {}).get(name, {})}.items()
                                if v not in ("", None)}  # an empty value in a recipe means "not set"
            if not entry["path"]:
                missing.append(name)
                continue
            entry["path"] = anchored(entry["path"], base)
            if entry["options"].get("image_root"):
                entry["options"]["image_root"] = anchored(entry["options"]["image_root"], base)
            sources.append(entry)
        if missing and not skip_missing:
            raise ConfigError(f"{file}: sources {missing} have no path; fill them in "
                              f"(mixture_paths.{missing[0]}=/data/... for training, --path {missing[0]}=/data/... "
                              "for `mrm-ray data`) or skip them "
                              "(--skip-missing)")
        for name in missing:
            logger.warning("mixture %s: source %s has no path and is skipped", raw.get("name", Path(file).stem), name)
        return {**raw, "sources": sources}

