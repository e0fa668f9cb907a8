"""The configs that ship inside the package, named by name: `--config tiny` works from any directory.

    train/    run presets (tiny, qwen2_5_vl_3b ... qwen2_5_vl_72b)
    serve/    Serve configs (tiny, cluster): the files `serve run` / `serve deploy` also take
    grpo/     GRPO jobs (tiny, qwen2_5_vl_3b)
    mixture/  preference-data mixtures (basereward, ...)

A value that names an existing file is that file; otherwise it is a shipped name (`config_file`
in config/core.py). `mrm-ray configs` lists them with their paths.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("train", "serve", "grpo", "mixture")


def _folder(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"no shipped config kind {kind!r}; kinds: {KINDS}")
    return Path(str(resources.files("mrm_ray") / "configs" / kind))


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in _folder(kind).glob("*.yaml"))


def path(kind: str, name: str) -> Path:
    """The shipped `kind` config called `name`."""
    return _folder(kind) / f"{name}.yaml"
