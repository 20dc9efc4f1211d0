"""Documentation made from the code, and the check that keeps it from going stale.

`GENERATED` maps each generated file (relative to the repository root) to the function that
renders it. `codexd docs` writes them all; `codexd docs --check` (and a unit test) compares the
checked-in files with a fresh rendering. To generate another page, add its path and its
`render() -> str` here: the command, `make docs` and the test pick it up.

Nothing in codexd imports this package except cli.py: it documents the other parts and is
never part of the running daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from codexd.docsgen import config, protocol

GENERATED: Final[Mapping[str, Callable[[], str]]] = {
    "docs/config.md": config.render,
    "docs/protocol.md": protocol.render,
}

REGENERATE: Final = "make docs (or: codexd docs)"


def repo_root() -> Path:
    """The source checkout this codexd runs from; raises LookupError for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "docs").is_dir():
        raise LookupError(
            f"codexd docs works in a source checkout; {root} is not one (no pyproject.toml "
            "and docs/ there)"
        )
    return root


def stale(root: Path) -> list[str]:
    """The generated files under `root` whose content differs from a fresh rendering."""
    out = []
    for rel, render in GENERATED.items():
        path = root / rel
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != render():
            out.append(rel)
    return out


def write(root: Path) -> list[str]:
    """Render every generated file under `root`; returns the ones that changed."""
    changed = []
    for rel, render in GENERATED.items():
        path = root / rel
        text = render()
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed
