"""The configuration reference, generated from the schemas themselves: every setting of every config file and
command, with its type, default and the comment beside it in the code, so the documentation cannot drift from
what the loader accepts (docs/reference/config.md is filled in from `markdown()` when the site is built).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from typing import Any

# (title, schema, how it is set): the files and commands a user writes settings for
SCHEMAS = (
    ("Training run", "RunConfig", "`mrm-ray train --config FILE|NAME a.b=value` (`jobs/train.py`); shipped: "
                                  "`mrm-ray configs`"),
    ("GRPO job", "GRPOConfig", "`mrm-ray grpo --config FILE|NAME a.b=value` (`jobs/grpo.py`)"),
    ("Serve application", "AppArgs", "`args:` of a Serve config's application (`mrm-ray serve --config FILE`, "
                                     "`serve deploy`)"),
    ("Ensemble", "EnsembleConfig", "`ensemble.yaml` (`mrm-ray ensemble fit` writes it)"),
    ("Data mixture", "MixtureConfig", "a mixture YAML (`mixture=FILE` of a training run; shipped: `basereward`)"),
    ("Evaluation", "EvalConfig", "`mrm-ray evaluate` flags, `--config FILE` and `a.b=value`"),
    ("Labelling", "LabelConfig", "`mrm-ray label` flags (`jobs/label.py`), `--config FILE` and `a.b=value`"),
    ("Ensemble fitting", "FitConfig", "`mrm-ray ensemble fit` flags and `--config FILE`"),
    ("Data commands", "DataCommandConfig", "`mrm-ray data inspect|prepare` flags and `--config FILE`"),
    ("Memory plan", "PlanConfig", "`mrm-ray plan PRESET --gpus N --gpu-mem GIB a.b=value`"),
    ("veRL reward function", "VerlReward", "`+reward.custom_reward_function.reward_kwargs.*` of a veRL job"),
    ("OpenRLHF agent executor", "OpenRLHFAgentConfig", "environment variables of an OpenRLHF job"),
)

ALIASES = {"Positive": "integer >= 1", "NonNegative": "number >= 0", "PositiveFloat": "number > 0",
           "Fraction": "number in [0, 1]"}


def comments(cls) -> dict[str, str]:
    """Field name -> the comment beside the line that declares it in `cls`'s source (and the comment lines that
    continue it below), else the comment block right above it."""
    out: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    lines = source.splitlines()
    names = {f.name for f in dataclasses.fields(cls)}
    line_field: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        head = line.strip().split(":", 1)[0]
        if head in names and line.startswith("    ") and not line.startswith("     ") and ":" in line:
            line_field[number] = head
    by_line = {t.start[0]: t.string.lstrip("#").strip()
               for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    for number, name in line_field.items():
        if number in by_line:  # beside it, continued by comment-only lines below
            text, below = [by_line[number]], number + 1
            while below in by_line and lines[below - 1].strip().startswith("#") and below not in line_field:
                text.append(by_line[below])
                below += 1
            out[name] = " ".join(text)
            continue
        above, block = number - 1, []
        while above in by_line and lines[above - 1].strip().startswith("#"):
            block.insert(0, by_line[above])
            above -= 1
        if block:
            out[name] = " ".join(block)
    return out


def _is_config(annotation: Any) -> type | None:
    """The config dataclass a field holds (itself or optional), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section below)"
    else:
        return "**required**"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: `|` would end the cell, `[a][b]` would be read as a link."""
    return text.replace("|", "\\|").replace("[", "\\[")


def _type(text: str) -> str:
    for alias, meaning in ALIASES.items():
        if text == alias or text == f"{alias} | None":
            return f"{text} ({meaning})"
    return text


def _summary(cls) -> str:
    """The first sentence of a config class's docstring."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    return "" if not doc or doc.startswith(cls.__name__ + "(") else doc.split("\n\n")[0].replace("\n", " ")


def section(cls, prefix: str, seen: set) -> list[str]:
    """One table for `cls`'s own settings (dotted under `prefix`), then a section per nested config."""
    import typing

    hints = typing.get_type_hints(cls)
    raw = {k: (v if isinstance(v, str) else getattr(v, "__name__", str(v))) for k, v in cls.__annotations__.items()}
    notes = comments(cls)
    doc = inspect.cleandoc(cls.__doc__) if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
    lines = [doc.split("\n\n")[0].replace("\n", " "), ""] if doc else []
    lines += ["| setting | type | default | what it is |", "|---|---|---|---|"]
    nested = []
    for field in dataclasses.fields(cls):
        name = f"{prefix}{field.name}"
        inner = _is_config(hints.get(field.name))
        if inner is not None:
            nested.append((name, inner))
        note = notes.get(field.name) or (_summary(inner) if inner is not None else "")
        lines.append(f"| `{name}` | {_cell(_type(raw.get(field.name, '')))} | {_cell(_default(field))} | "
                     f"{_cell(note)} |")
    lines.append("")
    for name, inner in nested:
        if (name, inner) in seen:
            continue
        seen.add((name, inner))
        lines += [f"### `{name}` ({inner.__name__})", "", *section(inner, f"{name}.", seen)]
    return lines


def markdown() -> str:
    """The whole reference: one section per config file or command."""
    import mrm_ray.config as config

    lines = ["Types: " + "; ".join(f"`{a}` is an {m}" if m[0] in "aeiou" else f"`{a}` is a {m}"
                                   for a, m in ALIASES.items()) + ". A nested setting is written `a.b=value` on a "
             "command line and as nested keys in YAML.", ""]
    for title, name, how in SCHEMAS:
        cls = getattr(config, name)
        lines += [f"## {title} (`{name}`)", "", f"Set in: {how}.", "", *section(cls, "", set())]
    return "\n".join(lines) + "\n"
