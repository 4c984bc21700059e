"""The package layout stays readable: no import cycles, no private names across modules, and the core
never imports its adapters (the CLI, the HTTP server, the scenario apps).

The import graph is built from the source (``ast``), module-level *and* function-level imports alike,
so a cycle cannot hide inside a function. Imports under ``if TYPE_CHECKING:`` are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "niche"
ADAPTERS = ("niche.cli", "niche.serving", "niche.apps")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip |= {id(n) for n in ast.walk(sub)}
    return skip


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a niche module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "niche"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "niche":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # `from . import train` imports the module niche.train
                    out.append((sub, "", node.lineno))
                else:
                    out.append((target, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    g: dict[str, set[str]] = {m: set() for m in known}
    for m, p in known.items():
        for target, _, _ in imports_of(m, p, known):
            if target in known and target != m:
                g[m].add(target)
    return g


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_modules() -> None:
    g = graph()
    assert "niche.classifier" in g and "niche.families" in g["niche.classifier"]
    assert len(g) > 40


def test_no_import_cycles() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "import cycles (module-level or inside functions):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_across_modules() -> None:
    known = modules()
    bad = []
    for m, p in known.items():
        for target, name, line in imports_of(m, p, known):
            private_module = any(part.startswith("_") and part != "__init__" for part in target.split(".")[1:])
            same_package = target.rsplit(".", 1)[0] == m.rsplit(".", 1)[0] or target.startswith(m.rsplit(".", 1)[0] + ".")
            if name.startswith("_") and not name.startswith("__") and target != m:
                bad.append(f"{p.relative_to(SRC)}:{line}: imports {name} from {target}")
            elif private_module and not same_package:
                bad.append(f"{p.relative_to(SRC)}:{line}: imports the private module {target} from outside its package")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_core_never_imports_adapters(adapter: str) -> None:
    known = modules()
    bad = []
    for m, p in known.items():
        if m.startswith(ADAPTERS) or m == "niche.__main__":
            continue  # adapters may use each other (the CLI starts the server) and the core
        for target, _, line in imports_of(m, p, known):
            if target == adapter or target.startswith(adapter + "."):
                bad.append(f"{p.relative_to(SRC)}:{line}: the core module {m} imports {target}")
    assert not bad, "\n".join(bad)


def test_apps_use_only_the_public_api() -> None:
    """Scenario apps build on the library the way a user would: they never import another part's private names."""
    known = modules()
    bad = [f"{p.relative_to(SRC)}:{line}: {name} from {target}"
           for m, p in known.items() if m.startswith("niche.apps")
           for target, name, line in imports_of(m, p, known)
           if not target.startswith("niche.apps") and (name.startswith("_") or "._" in target)]
    assert not bad, "\n".join(bad)
