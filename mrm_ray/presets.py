"""The configs that ship inside the package, named by name: `--config tiny` works from any directory.

    train/    run presets (tiny, qwen2_5_vl_3b ... qwen2_5_vl_72b)
    serve/    Serve configs (tiny, cluster): the files `serve run` / `serve deploy` also take
    grpo/     GRPO jobs (tiny, qwen2_5_vl_3b)
    mixture/  preference-data mixtures (basereward, ...)

A value that names an existing file is that file; otherwise it is a shipped name.
`mrm-ray configs` lists them with their paths.
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


def shipped(kind: str, name: str) -> Path:
    """The shipped `kind` config called `name`."""
    return _folder(kind) / f"{name}.yaml"


def config_file(kind: str, name_or_path: str) -> Path:
    """A config file: `name_or_path` itself when it is a file, else the shipped config of that name."""
    from mrm_ray.config import ConfigError

    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    if shipped(kind, str(name_or_path)).is_file():
        return shipped(kind, str(name_or_path))
    raise ConfigError(f"no {kind} config {name_or_path!r}: not a file, and not a shipped name "
                      f"({', '.join(names(kind))}; `mrm-ray configs` lists them)")
