"""docs/config.md: generated from the schema, complete, and its examples load."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from msgspec import inspect as mi

from codexd.config.load import load_config, unknown_key_warnings
from codexd.config.schema import ConfigToml
from codexd.config.store import RESTART_KEYS
from codexd.docsgen import config as docsgen

REPO: Final = Path(__file__).resolve().parents[2]
DOC: Final = REPO / "docs" / "config.md"
# The daemon's sources, and the socket rule it shares with codexctl.
SOURCES: Final = [
    *sorted((REPO / "codexd").rglob("*.py")),
    REPO / "clients" / "codexctl" / "codexctl" / "protocol.py",
]


def test_the_checked_in_doc_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == docsgen.render(), (
        "docs/config.md is stale: run `make docs`"
    )


# --------------------------------------------------------------------------- descriptions


def _fields(info: Any, path: str) -> Iterator[tuple[str, str]]:
    """(dotted key, description) of every field of every Struct below `info`."""
    description = ""
    if isinstance(info, mi.Metadata):
        description = (info.extra_json_schema or {}).get("description", "")
        info = info.type
    yield path, description
    types = info.types if isinstance(info, mi.UnionType) else (info,)
    for tp in types:
        if isinstance(tp, mi.DictType):
            yield from _children(tp.value_type, f"{path}.*")
        elif isinstance(tp, mi.StructType):
            for field in tp.fields:
                yield from _fields(field.type, f"{path}.{field.name}".lstrip("."))


def _children(info: Any, path: str) -> Iterator[tuple[str, str]]:
    inner = info.type if isinstance(info, mi.Metadata) else info
    if isinstance(inner, mi.StructType):
        for field in inner.fields:
            yield from _fields(field.type, f"{path}.{field.name}")


def schema_keys() -> dict[str, str]:
    keys = dict(_fields(mi.type_info(ConfigToml), ""))
    keys.pop("")  # the file itself
    return keys


def test_every_key_of_the_schema_has_a_description() -> None:
    keys = schema_keys()
    assert "codexd.gateway.tcp" in keys and "model_providers.*.env_key" in keys
    missing = sorted(key for key, text in keys.items() if not text.strip())
    assert missing == [], (
        "keys without a description: give each a Meta(description=...) in "
        "codexd/config/schema.py, then run `make docs`"
    )


def test_every_key_is_in_the_doc_with_its_restart_mark() -> None:
    keys = schema_keys()
    leaves = {k for k in keys if not any(other.startswith(k + ".") for other in keys)}
    rows = {key.pattern: key for table in docsgen.tables() for key in table.keys}
    assert set(rows) == leaves
    assert {k for k, key in rows.items() if key.restart} == set(RESTART_KEYS)


# --------------------------------------------------------------------------- examples


def toml_blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_every_example_loads(tmp_path: Path) -> None:
    blocks = toml_blocks()
    assert len(blocks) == len(docsgen.EXAMPLES) + 1  # and the profile file's
    for n, block in enumerate(blocks):
        home = tmp_path / str(n)
        home.mkdir()
        (home / "config.toml").write_text(block)
        (home / "models.json").write_text('{"models": []}')  # the catalog an example names
        load_config(str(home), {})
        assert unknown_key_warnings(str(home / "config.toml")) == [], block


def test_the_profile_example_is_a_profile_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('model = "gpt-5"\nprofile = "work"\n')
    (tmp_path / "work.config.toml").write_text(docsgen.PROFILE_EXAMPLE)
    snap = load_config(str(tmp_path), {})
    assert (snap.profile, snap.model, snap.model_provider) == ("work", "gpt-5.1-codex-mini", "corp")
    assert [layer.kind for layer in snap.layers] == ["config", "profile"]


def _written(doc: dict[str, Any], prefix: tuple[str, ...], known: set[str]) -> Iterator[str]:
    """The schema key (ids as `*`) of every key written in `doc`; `?key` for one it has not."""
    for name, value in doc.items():
        for step in (name, "*"):
            path = ".".join((*prefix, step))
            if path in known:
                yield path
                break
            if isinstance(value, dict) and any(k.startswith(path + ".") for k in known):
                yield from _written(value, (*prefix, step), known)
                break
        else:
            yield "?" + ".".join((*prefix, name))


def test_every_key_has_an_example() -> None:
    known = {key.pattern for table in docsgen.tables() for key in table.keys}
    written: set[str] = set()
    for block in toml_blocks():
        written |= set(_written(tomllib.loads(block), (), known))
    assert sorted(k for k in written if k.startswith("?")) == []
    assert sorted(known - written) == []


# --------------------------------------------------------------------------- environment


_ENV: Final = frozenset({"env", "environ", "_env"})
_VARIABLE: Final = re.compile(r"[A-Z][A-Z0-9_]*")


def _is_env(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in _ENV) or (
        isinstance(node, ast.Attribute) and node.attr in _ENV
    )


def read_variables(source: str) -> set[str]:
    """The names of the environment variables a module reads: `env.get(NAME)`,
    `os.environ[NAME]`, `os.getenv(NAME)` and the like, NAME a literal or a module constant."""
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
        value = getattr(stmt, "value", None)
        text = value.value if isinstance(value, ast.Constant) else None
        if isinstance(target, ast.Name) and isinstance(text, str):
            constants[target.id] = text

    def name(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            attribute = isinstance(func, ast.Attribute)
            env_get = attribute and func.attr == "get" and _is_env(func.value)
            getenv = (attribute and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            )
            if env_get or getenv:
                found.add(name(node.args[0]))
        elif isinstance(node, ast.Subscript) and _is_env(node.value):
            found.add(name(node.slice))
    return {n for n in found if n is not None and _VARIABLE.fullmatch(n)}


def test_the_scan_finds_every_way_of_reading_a_variable() -> None:
    source = (
        "import os\nfrom os import getenv\nURL_ENV = 'A_URL'\n"
        "def f(env, self):\n"
        "    env.get('ONE'); os.environ['TWO']; os.getenv('THREE'); getenv('FOUR')\n"
        "    self._env.get(URL_ENV); os.environ.get('FIVE', 'x'); env.get(name)\n"
    )
    assert read_variables(source) == {"ONE", "TWO", "THREE", "FOUR", "A_URL", "FIVE"}


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    read: set[str] = set()
    for path in SOURCES:
        read |= read_variables(path.read_text(encoding="utf-8"))
    assert {"CODEX_HOME", "CODEXD_SOCKET", "CODEX_REFRESH_TOKEN_URL_OVERRIDE"} <= read
    doc = DOC.read_text(encoding="utf-8")
    assert sorted(v for v in read if f"`{v}`" not in doc) == [], (
        "environment variables the code reads but docs/config.md does not list: add them to "
        "ENVIRONMENT in codexd/docsgen/config.py, then run `make docs`"
    )


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "OPENAI_ORGANIZATION", "OPENAI_PROJECT"])
def test_the_built_in_providers_variables_are_documented(variable: str) -> None:
    """Read through the provider table (`env_key`, `env_http_headers`), not by name."""
    assert f"| `{variable}` |" in DOC.read_text(encoding="utf-8")
