"""The documentation: the site builds with `mkdocs build --strict` (broken links, missing API objects and bad
markup fail), every `mrm-ray` command line in the docs and the README parses with the real command-line parser
and names only settings the schemas have (a renamed flag or setting breaks CI, not a user), and the blocks
marked `<!-- runnable -->` run as written on the tiny defaults."""

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "examples" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUNNABLE = "<!-- runnable -->"
FENCE = re.compile(r"(<!-- runnable -->\s*\n)?```bash\n(.*?)```", re.S)


def blocks() -> list[tuple[Path, bool, str]]:
    """(page, runnable, text) of every bash block."""
    return [(page, bool(m.group(1)), m.group(2)) for page in PAGES for m in FENCE.finditer(page.read_text())]


def command_lines(text: str) -> list[str]:
    """The block's lines with continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split("  #", 1)[0].strip() for line in joined.splitlines() if line.strip()]


def mrm_ray_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `mrm-ray`) of every `mrm-ray` invocation in a bash block; `[optional]` parts left out."""
    out = []
    for page, _, text in blocks():
        for line in command_lines(text):
            for part in re.split(r"&&|\|\||;|\|", line):
                part = re.sub(r"\[[^\]]*\]", "", part).strip()  # usage brackets: [--ensemble FILE]
                if part.startswith("mrm-ray "):
                    out.append((f"{page.relative_to(REPO)}: {part}", shlex.split(part)[1:]))
    return out


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    # the generated reference: a setting added this session, with its default and comment
    assert "tracking.mlflow.tracking_uri" in page and "ingress.max_ongoing_requests" in page
    assert "RewardModel" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def test_every_setting_in_the_reference_says_what_it_is():
    """The generated reference gives each setting its comment from the code (or its section's docstring)."""
    from mrm_ray.config.reference import markdown

    rows = [line for line in markdown().splitlines() if line.startswith("| `")]
    assert len(rows) > 300
    assert not [row.split("|")[1].strip() for row in rows if row.rstrip().endswith("|  |")]


def _schema(argv: list[str]):
    import mrm_ray.config as config

    return {"train": config.RunConfig, "grpo": config.GRPOConfig, "evaluate": config.EvalConfig,
            "plan": config.RunConfig, "ensemble": config.FitConfig, "data": config.DataCommandConfig}.get(argv[0])


def _known(schema, dotted: str) -> bool:
    """Whether `dotted` names a setting of `schema` (any key under a dict-typed setting)."""
    cls = schema
    for part in dotted.split("."):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return typing.get_origin(cls) is dict or cls is dict
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        hint = hints[part]
        inner = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        cls = inner[0] if inner else hint
    return True


def test_every_mrm_ray_command_in_the_docs_parses_and_names_real_settings():
    from mrm_ray.cli import build_parser

    commands = mrm_ray_commands()
    assert len(commands) >= 20, commands
    parser = build_parser()
    for where, argv in commands:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"the parser refuses {where}")
        unknown = [e for e in extra if e.startswith("-")]
        assert not unknown, f"{where}: unknown flags {unknown}"
        schema = _schema(argv)
        for override in (e for e in extra if "=" in e and not e.startswith("-")):
            key = override.split("=", 1)[0]
            bare_data = argv[0] == "data" and _known(schema, f"data.{key}")  # `max_length=4096`: data.max_length
            assert schema is not None and (_known(schema, key) or bare_data), f"{where}: {key} is not a setting"


def test_runnable_blocks_run_as_written(tmp_path):
    runnable = [(page, text) for page, run, text in blocks() if run]
    assert len(runnable) >= 3
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for page, text in runnable:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, f"{page.relative_to(REPO)}:\n{text}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
