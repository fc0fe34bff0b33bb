"""The package's layers: imports go one way only, sit at the top of modules, and form no circle."""

from __future__ import annotations

import ast
from pathlib import Path

from utils.core import paths

PACKAGE = paths.ROOT / "utils"
# Which subpackages each subpackage may import (itself included). A lower layer never imports
# a higher one; the hand-in tooling stands beside the layers and sees only the core.
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "models": {"core", "data", "models"},
    "eval": {"core", "data", "models", "eval"},
    "train": {"core", "data", "models", "eval", "train"},
    "experiments": {"core", "data", "models", "eval", "train", "experiments"},
    "app": {"core", "data", "models", "eval", "app"},
    "handin": {"core", "handin"},
}


def module_name(path: Path) -> str:
    """utils/models/clip.py -> 'utils.models.clip' (a package's __init__ -> the package)."""
    parts = path.relative_to(paths.ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def utils_imports(tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    """(statement, imported utils module) for every import of the package, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("utils"):
            if node.module == "utils":
                found += [(node, f"utils.{alias.name}") for alias in node.names]
            else:
                found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.startswith("utils")]
    return found


def layer_of(module: str) -> str:
    """'utils.models.clip' -> 'models'."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def all_modules() -> dict[str, ast.Module]:
    """Every module of the package, parsed."""
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8"))
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_subpackage_has_a_declared_layer() -> None:
    layers = {layer_of(m) for m in all_modules() if m != "utils"}
    assert layers <= set(ALLOWED), f"undeclared subpackage(s): {sorted(layers - set(ALLOWED))}"


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for module, tree in all_modules().items():
        if module == "utils":
            continue
        for node, target in utils_imports(tree):
            if layer_of(target) not in ALLOWED[layer_of(module)]:
                wrong.append(f"{module} (line {node.lineno}) imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_package_imports_sit_at_the_top_of_modules() -> None:
    nested = []
    for module, tree in all_modules().items():
        top = {id(node) for node in tree.body}
        nested += [f"{module} (line {node.lineno}) imports {target} inside a function or block"
                   for node, target in utils_imports(tree) if id(node) not in top]
    assert not nested, "\n".join(nested)


def test_no_import_circle() -> None:
    modules = all_modules()
    graph = {m: {t for _, t in utils_imports(tree) if t in modules and t != m}
             for m, tree in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_the_direction_test_names_an_offending_import(tmp_path: Path) -> None:
    tree = ast.parse("from utils.experiments.runs import compare\n")
    (node, target), = utils_imports(tree)
    assert layer_of(target) not in ALLOWED["models"]
    assert target == "utils.experiments.runs" and node.lineno == 1
