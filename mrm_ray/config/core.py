"""The mechanism of the one config system: schemas, validation, the error format, and the one loader.

A schema is a frozen, keyword-only dataclass (`config_dataclass`) whose fields carry their types,
ranges and defaults, checked by pydantic. `validate(cls, data)` builds one from plain data (YAML,
`a.b=value` overrides, command-line flags, a Ray worker's dict): values are checked and coerced
(`"1e-6"` is a float), unknown keys are refused with the dotted path and the closest valid key, and
every problem comes back at once in one `ConfigError` (entry points exit with code 2, before Ray
starts). Ray workers receive plain dicts and rebuild configs with `validate`, so a config never
depends on objects captured from a driver process.

`load(schema, source, overrides, values=...)` is the one way a config is read: a shipped name or a
YAML file (local or an object-store URI), then the values of command-line flags, then `a.b=value`
overrides, validated at once; a schema that holds paths anchors them (`anchored`), and one whose
file needs shaping before validation (a Serve config, a mixture recipe) says how (`from_file`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from mrm_ray import storage
from mrm_ray.config import shipped

# how a run gives videos to the model (model/inputs.py): the family's own video path (its video processor, which
# needs torchvision), each video's frames as images in order, or the first where it loads
VIDEO_ROUTES = ("auto", "video", "frames")

Positive = Annotated[int, Ge(1)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, le=1)]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every problem by its dotted path."""


def run_main(main) -> int:
    """Call an entry point's `main()`; a ConfigError prints one clear error and returns exit code 2."""
    import sys

    try:
        return main() or 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def config_dataclass(cls):
    """A frozen, keyword-only dataclass whose fields pydantic checks on construction; unknown keys are errors."""
    return _pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))(cls)


@lru_cache(maxsize=None)
def _adapter(cls):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def validate(cls, data: dict | None, *, where: str = ""):
    """`cls` built from plain data, every field checked; raises one ConfigError listing all problems.

    `where` prefixes the dotted paths in messages (e.g. "reward" for a sub-config).
    """
    from pydantic import ValidationError

    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of settings, got {data!r}")
    try:
        return _adapter(cls).validate_python(dict(data or {}))
    except ValidationError as exc:
        problems = [_describe(cls, error, where) for error in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _is_config(tp) -> bool:
    from pydantic import BaseModel

    return dataclasses.is_dataclass(tp) or (isinstance(tp, type) and issubclass(tp, BaseModel))


def _field_types(cls) -> dict[str, Any]:
    """name -> type of a config dataclass's or pydantic model's fields ({} for anything else)."""
    if dataclasses.is_dataclass(cls):
        return typing.get_type_hints(cls)
    if _is_config(cls):
        return {name: f.annotation for name, f in cls.model_fields.items()}
    return {}


def _unwrap(tp):
    """The config class inside `X | None`, `tuple[X, ...]`, `list[X]`, `Annotated[X, ...]`, if any."""
    if _is_config(tp):
        return tp
    for arg in typing.get_args(tp) or ():
        inner = _unwrap(arg)
        if inner is not None:
            return inner
    return None


def _describe(cls, error: dict, where: str) -> str:
    loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
    shown_loc = [str(part) if not isinstance(part, int) else f"[{part}]" for part in error["loc"]]
    path = ".".join(filter(None, [where, *shown_loc])).replace(".[", "[")
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        owner = cls
        for part in loc[:-1]:
            owner = _unwrap(_field_types(owner).get(part)) or owner
        known = list(_field_types(owner))
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known here: {', '.join(known)}"
        return f"{path}: unknown setting{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # the dataclass's own check, which names its fields
        return message if not path or message.startswith(path.rpartition(".")[2]) else f"{path}: {message}"
    value = error.get("input")
    shown = f" (got {value!r})" if not isinstance(value, (dict, list, tuple)) else ""
    return f"{path or cls.__name__}: {message}{shown}"

def to_dict(config: Any) -> dict:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def parse_overrides(items: Sequence[str]) -> dict:
    """["max_length=512", "image_modes=convert"] -> {"max_length": 512, "image_modes": "convert"}.

    Values are read as YAML scalars, so numbers, booleans and null come out typed.
    """
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.learning_rate=1e-6)")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "2e-3" as text; people mean a number
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def set_path(data: dict, dotted: str, value) -> None:
    """data["a"]["b"] = value for "a.b"."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        if not isinstance(node[key], dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is a setting, not a section")
        node = node[key]
    node[leaf] = value


def config_file(kind: str, name_or_path: str) -> Path:
    """A config file: `name_or_path` itself when it is a file, else the shipped config of that name (shipped.py)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    if shipped.path(kind, str(name_or_path)).is_file():
        return shipped.path(kind, str(name_or_path))
    raise ConfigError(f"no {kind} config {name_or_path!r}: not a file, and not a shipped name "
                      f"({', '.join(shipped.names(kind))}; `mrm-ray configs` lists them)")


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML file's mapping (a local path or an object-store URI); ConfigError when it is none."""
    import yaml

    try:
        text = (storage.local_copy(str(path)) if storage.is_uri(str(path)) else Path(path)).read_text()
        data = yaml.safe_load(text) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    return data


def merged(data: Mapping | None, *, values: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> dict:
    """`data` with command-line `values` ({dotted key: value}; None = not given) and then `a.b=value`
    overrides applied."""
    import copy

    out = copy.deepcopy(dict(data or {}))
    for key, value in (values or {}).items():
        if value is not None:
            set_path(out, key, value)
    for key, value in parse_overrides(list(overrides)).items():
        set_path(out, key, value)
    return out


def load(schema, source: str | os.PathLike | None = None, overrides: Sequence[str] = (), *,
         values: Mapping[str, Any] | None = None, kind: str | None = None, **options):
    """The one loader: `schema` from `source` (a shipped config's name when `kind` names one of the shipped
    kinds, else a YAML path or URI; None: the defaults), command-line `values`, then overrides; validated at
    once (ConfigError), its paths anchored. `options` go to the schema's `from_file`."""
    file = None
    if source is not None:
        file = str(source) if storage.is_uri(str(source)) else (
            config_file(kind, str(source)) if kind else Path(source).expanduser().resolve())
    data = read_yaml(file) if file is not None else {}
    base = None if file is None else (str(file).rsplit("/", 1)[0] if storage.is_uri(str(file)) else Path(file).parent)
    if hasattr(schema, "from_file"):
        data = schema.from_file(data, file=file, base=base, **options)
    elif options:
        raise TypeError(f"{schema.__name__} takes no loading options, got {sorted(options)}")
    config = validate(schema, merged(data, values=values, overrides=overrides))
    return config.anchored(base) if hasattr(config, "anchored") else config


