"""The package's shape: every module imports only its own layer or the layers below it, and nothing loops.

Every import counts, at module level or inside a function, so a loop cannot hide in a
deferred import. The layers, lowest first, are those of docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "focalmix_lib"

# Lowest first. A module may import its own layer (never in a loop) or any layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("atomic", "errors", "config", "paper", "__init__"),  # the package root holds only its version
    ("data",),
    ("detection",),
    ("losses", "ssl"),
    ("training",),
    ("inference",),
    ("evaluation",),
    ("reproduction",),
    ("viz", "related"),
    ("cli", "__main__"),
)


def layer_of(module: str) -> int:
    """Layer index of ``focalmix_lib.<top>...`` by its first component."""
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: not placed in any layer of tests/test_architecture.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imported_modules(path: Path) -> set[str]:
    """The focalmix_lib modules a file imports anywhere in it (``from a import b`` counts a.b when b is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("focalmix_lib"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("focalmix_lib"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.add(candidate if is_module else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        # Importing a package runs its __init__; the edge to the package itself is what counts.
        graph[name] = {m for m in imported_modules(path) if m != name}
    return graph


def test_every_import_goes_to_the_same_or_a_lower_layer() -> None:
    graph = import_graph()
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module in sorted(graph) for target in sorted(graph[module]) if layer_of(target) > layer_of(module)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_loops() -> None:
    graph = import_graph()
    loops: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                loops.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not loops, "import loops:\n" + "\n".join(loops)

