"""The collect wing's structure: no import circle between its modules (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import varprinciple.collect

COLLECT = Path(varprinciple.collect.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Sibling modules each top-level module of varprinciple.collect imports (``from .x import``)."""
    graph = {}
    for f in COLLECT.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
        graph[f.stem] = deps
    return graph


def test_collect_modules_import_each_other_without_a_circle():
    graph = _imports()
    assert {"run", "api", "executors", "profiles", "one_run", "probe_runner"} <= set(graph)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue  # a subpackage (noise) or a non-module name
            assert state.get(d) != 1, "import circle: " + " -> ".join(path[path.index(d):] + [d])
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


#: Modules a few hundred lines long, one job each (issue 20): every module of the package stays
#: under this many lines.
MAX_LINES = 520


def test_every_module_is_under_the_line_limit():
    root = COLLECT.parent
    long = {}
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        n = len(f.read_text(encoding="utf-8").splitlines())
        if n >= MAX_LINES:
            long[rel] = n
    assert not long, f"modules of {MAX_LINES}+ lines (split them along their jobs): {long}"
