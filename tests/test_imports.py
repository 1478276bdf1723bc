"""The layers import each other without cycles (issue 14, item 2; docs/architecture.md, "Layers").

The graph is read from the source (every ``import`` / ``from … import`` of a project module, at
module level or inside a function, except under ``if TYPE_CHECKING``), so a cycle that only a
function-level import closes counts too: those import in whatever order the first call happens
to run, and they hide which layer depends on which.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "probes", "reports", "dashboard")


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            if "data" in parts[1:-1]:  # data generators shipped beside the data
                continue
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a ``from pkg import sub`` of a submodule is an
    import of ``pkg.sub``, not of ``pkg``)."""
    is_pkg = path.name == "__init__.py"

    def known(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(t for a in child.names if (t := known(a.name)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = name.split(".")[: len(name.split(".")) - (0 if is_pkg else 1) - (child.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    t = sub if sub in modules else known(base)
                    if t:
                        found.add(t)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_cycles_are_found() -> None:
    """The detector itself: a planted two-module loop is reported, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    assert graph["audit.probe"] >= {"audit.exclusions", "audit.generation", "audit.errors"}  # the graph is read
    assert cycles(graph) == []


def test_audit_never_imports_the_layers_above() -> None:
    modules = project_modules()
    for m, p in modules.items():
        if m.split(".")[0] == "audit":
            above = {t for t in imports_of(m, p, modules) if t.split(".")[0] in ("probes", "reports", "dashboard")}
            assert not above, f"{m} imports {sorted(above)}"


def test_errors_is_a_leaf() -> None:
    modules = project_modules()
    assert imports_of("audit.errors", modules["audit.errors"], modules) == set()
