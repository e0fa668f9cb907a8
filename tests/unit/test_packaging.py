"""What the package declares is what it needs: every package mrm_ray imports is a declared dependency,
and the configs it names by name are package data (the wheel itself is built and run in
tests/integration/test_wheel.py)."""

import ast
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PACKAGE = Path(__file__).resolve().parents[2] / "mrm_ray"
# imported inside `try: ... except ImportError` with a path that works without them, or in a file only
# their own framework loads
OPTIONAL = {"torchvision": "model/processor.py builds the image-only processor without it",
            "openrlhf": "rl/openrlhf_agent.py is loaded by OpenRLHF, inside its own job"}
# imported only where a setting asks for them (config/tracking.py refuses the setting when they are missing),
# and declared in that extra
EXTRAS = {"mlflow": "tracking", "wandb": "tracking", "sqlalchemy": "tracking", "alembic": "tracking"}


def _imported_top_level_modules() -> dict[str, str]:
    """top-level module -> one file importing it, for every import in the package (lazy ones too)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(PACKAGE.parent)))
    return found


def test_every_imported_package_is_a_declared_dependency():
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    def names(requirements):
        return {Requirement(r).name.lower().replace("_", "-") for r in requirements}

    declared = names(project["dependencies"])
    providers = metadata.packages_distributions()
    missing = {}
    for module, where in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in ("mrm_ray", "__future__") or module in OPTIONAL:
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        allowed = declared | (names(project["optional-dependencies"][EXTRAS[module]]) if module in EXTRAS else set())
        if not dists & allowed:
            missing[module] = (sorted(dists), where)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_shipped_configs_are_package_data():
    import tomllib

    setuptools = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["mrm_ray"]
    shipped = sorted(p.relative_to(PACKAGE) for p in (PACKAGE / "configs").rglob("*") if p.is_file())
    assert shipped and all(any(p.match(pattern) for pattern in patterns) for p in shipped), shipped
