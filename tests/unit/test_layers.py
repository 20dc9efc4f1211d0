"""The import rules between codexd's parts, read from the source with `ast`.

A node is a top-level module (codexd/x.py) or package (codexd/x/). Every import counts:
at module level, inside functions, and under `if TYPE_CHECKING:` (a cycle hidden there is
still a cycle in the design). `python tests/unit/test_layers.py` prints the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2] / "codexd"

FRONT_DOORS: Final = frozenset({"rpc", "gateway"})
# The application layer and what lies beneath it: none of them may reach up to a front door
# or to the composition root.
LOWER: Final = frozenset({"service", "jobs", "upstream", "limits", "usage", "auth", "config"})
ENTRY_POINT: Final = "cli"
# Documentation made from the code: it may read every part (it documents the front door), but
# only the entry point runs it, so no part of the daemon depends on it.
DOCS: Final = "docsgen"

# Imports the rules below still let through, each with its reason. An entry that no longer
# matches anything is fine (the import went away); a new exception needs a line here.
ALLOWED: Final[Mapping[tuple[str, str], str]] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _node(module: str) -> str | None:
    """`codexd.x.y` → `x` when codexd/x.py or codexd/x/ exists; None outside codexd."""
    parts = module.split(".")
    if parts[0] != "codexd" or len(parts) < 2:
        return None
    name = parts[1]
    if (ROOT / f"{name}.py").is_file() or (ROOT / name / "__init__.py").is_file():
        return name
    return None


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module an import statement anywhere in `tree` names (absolute names)."""
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Import):
            yield from (alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (stmt.level - 1)]
                target = ".".join([*base, stmt.module] if stmt.module else base)
            else:
                target = stmt.module or ""
            yield target
            # `from codexd import daemon` names the module daemon, not codexd
            yield from (f"{target}.{alias.name}" for alias in stmt.names)


def import_edges() -> list[tuple[str, str]]:
    """(importing module, imported module) for every import inside codexd."""
    edges: list[tuple[str, str]] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target in _imported(tree, module, path.name == "__init__.py"):
            if _node(target) is not None:
                edges.append((module, target))
    return edges


def graph(edges: list[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for src, dst in edges:
        a, b = _node(src), _node(dst)
        if a is not None and b is not None and a != b:
            out.setdefault(a, set()).add(b)
    return out


def _allowed(src: str, dst: str) -> bool:
    return any(
        (src == s or src.startswith(s + ".")) and (dst == d or dst.startswith(d + "."))
        for s, d in ALLOWED
    )


def _violations(edges: list[tuple[str, str]]) -> list[str]:
    bad = []
    for src, dst in edges:
        a, b = _node(src), _node(dst)
        if a is None or b is None or a == b or _allowed(src, dst):
            continue
        if a in FRONT_DOORS and b in FRONT_DOORS:
            bad.append(f"{src} imports {dst}: the front doors never import each other")
        elif a in LOWER and (b in FRONT_DOORS or b == "daemon"):
            bad.append(f"{src} imports {dst}: {a} lies below the front doors and daemon.py")
        elif b == "daemon" and a != ENTRY_POINT:
            bad.append(f"{src} imports {dst}: nothing but the entry point imports daemon.py")
        elif b == DOCS and a != ENTRY_POINT:
            bad.append(f"{src} imports {dst}: nothing but the entry point imports docsgen")
    return bad


def _cycles(g: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_the_front_doors_and_the_layers_below_keep_their_direction() -> None:
    assert _violations(import_edges()) == []


def test_no_cycle_between_codexd_parts() -> None:
    g = graph([(s, d) for s, d in import_edges() if not _allowed(s, d)])
    assert _cycles(g) == []


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    """Each rule fires on an import it forbids, found wherever the import sits."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from codexd.rpc.server import CallContext\n"
        "def f():\n    from codexd import daemon\n"
    )
    found = list(_imported(tree, "codexd.service.submit", False))
    assert "codexd.rpc.server" in found and "codexd.daemon" in found
    edges = [
        ("codexd.gateway.server", "codexd.rpc.methods"),
        ("codexd.rpc.methods", "codexd.gateway.server"),
        ("codexd.service.submit", "codexd.rpc.server"),
        ("codexd.jobs", "codexd.daemon"),
        ("codexd.events", "codexd.daemon"),
        ("codexd.cli", "codexd.daemon"),
        ("codexd.gateway.server", "codexd.rpc.peer"),
        ("codexd.rpc.methods", "codexd.docsgen.protocol"),
        ("codexd.docsgen.protocol", "codexd.rpc.methods"),
        ("codexd.cli", "codexd.docsgen"),
    ]
    assert len(_violations(edges)) == 7
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(LOWER | FRONT_DOORS | {"daemon", ENTRY_POINT, DOCS}))
def test_every_named_part_exists(name: str) -> None:
    """A renamed part would silently drop out of the rules above."""
    assert _node(f"codexd.{name}") == name


if __name__ == "__main__":
    for node, deps in sorted(graph(import_edges()).items()):
        print(f"{node} -> {', '.join(sorted(deps))}")
