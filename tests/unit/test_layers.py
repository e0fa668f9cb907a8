"""The package's boundaries, read from its source: every import (function-local ones too, so none can hide a
cycle) follows the layers of ../shared/ARCHITECTURE.md, and no two modules import each other, directly or
round a loop.

    base    config/, atomic, storage, references, run_folder, logs, ray_session, ensemble, rewards, chatml
    model   model/
    data    data/
    train | eval | serve   each its own, none importing another
    rl      rl/ (serves itself through serve's client)
    entries jobs, cli, submit, __main__ (and the package's lazy `mrm_ray` facade)
"""

import ast
from pathlib import Path

import mrm_ray

PACKAGE = Path(mrm_ray.__file__).parent
LAYERS = {"base": 0, "model": 1, "data": 2, "train": 3, "eval": 3, "serve": 3, "rl": 4, "entries": 5}
PEERS = {"train", "eval", "serve"}  # one layer, but none may import another


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("jobs", "cli", "submit", "__main__"):
        return "entries"
    return parts[1] if parts[1] in LAYERS else "base"


def _imports(module: str, path: Path) -> set[str]:
    """The package's modules `module` imports anywhere in its source (a `from pkg import name` of a submodule
    counts as that submodule)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import mrm_ray.model.x as y` of an attribute: its module
                name = name.rpartition(".")[0]
            if name.startswith("mrm_ray") and name != module:
                found.add(name)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_imports_follow_the_layers():
    wrong = []
    for module, imported in GRAPH.items():
        mine = _layer(module)
        for other in sorted(imported):
            theirs = _layer(other)
            if LAYERS[theirs] > LAYERS[mine] or (mine != theirs and {mine, theirs} <= PEERS):
                wrong.append(f"{module} ({mine}) imports {other} ({theirs})")
    assert not wrong, "imports against the layers:\n  " + "\n  ".join(wrong)


def test_no_import_cycles_counting_function_local_imports():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"modules that import each other (round a loop): {cycles}"


def test_the_walk_sees_function_local_imports():
    """The walk itself: a function-local import is an edge (jobs imports the trainer only inside a function)."""
    assert "mrm_ray.train.launch" in GRAPH["mrm_ray.jobs"] and "mrm_ray.jobs" in GRAPH["mrm_ray.cli"]
    assert len(MODULES) > 60
