"""Each security decision has one home in codexd/security/: no other module of the daemon
makes its own private listener, reads a peer's credentials, judges a file's mode or keeps a
credential pattern. (The client, clients/codexctl, is a separate stdlib-only package with
its own socket-directory check.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CODEXD = Path(__file__).resolve().parents[2] / "codexd"

# A call by this name, or a constant, belongs in that module only.
HOMES = {
    "umask": "security/listeners.py",
    "create_unix_listener": "security/listeners.py",
    "peer_credentials": "security/peer.py",
    "peer_allowed": "security/peer.py",
    "S_IMODE": "security/files.py",
    "credential pattern": "security/scrub.py",
}
# Text that only a pattern for credentials would hold.
_CREDENTIAL_SHAPES = ("sk-", "eyJ", "bearer", "Bearer", "ghp_", "xox")


def _uses(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in HOMES:
                found.add(name)
            if name == "compile" and any(
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and any(shape in arg.value for shape in _CREDENTIAL_SHAPES)
                for arg in node.args
            ):
                found.add("credential pattern")
    return found


def _modules() -> list[Path]:
    return sorted(CODEXD.rglob("*.py"))


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(CODEXD)))
def test_no_module_makes_a_security_decision_outside_its_home(module: Path) -> None:
    here = str(module.relative_to(CODEXD))
    tree = ast.parse(module.read_text(), str(module))
    strays = sorted(name for name in _uses(tree) if HOMES[name] != here)
    assert strays == [], f"{here} decides {strays} itself: use codexd/security/"


def test_every_home_is_where_its_decision_is_made() -> None:
    """The guard above looks for the right things: each home does use what it guards."""
    used: set[str] = set()
    for home in set(HOMES.values()):
        used |= _uses(ast.parse((CODEXD / home).read_text()))
    assert used == set(HOMES)
