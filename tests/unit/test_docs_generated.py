"""The docs made from the code are current, complete, and their examples fit the types."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codexctl.protocol import ErrorReply
from codexd import docsgen
from codexd.cli import main
from codexd.docsgen import protocol
from codexd.docsgen.examples import ERROR_EXAMPLE, EXAMPLES, NOTIFICATION_EXAMPLES
from codexd.rpc.methods import TABLE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def protocol_md() -> str:
    return protocol.render()


@pytest.mark.parametrize("rel", sorted(docsgen.GENERATED))
def test_the_checked_in_doc_is_current(rel: str) -> None:
    checked_in = (ROOT / rel).read_text(encoding="utf-8")
    assert checked_in == docsgen.GENERATED[rel](), (
        f"{rel} is stale: run `make docs` and commit the result"
    )


def test_the_rendering_is_the_same_every_time(protocol_md: str) -> None:
    assert protocol.render() == protocol_md
    assert str(ROOT) not in protocol_md


def test_every_method_has_a_section(protocol_md: str) -> None:
    missing = [name for name in TABLE.methods if f"\n### `{name}`\n" not in protocol_md]
    assert missing == []


def test_every_notification_has_a_section(protocol_md: str) -> None:
    missing = [
        n.method for n in protocol.NOTIFICATIONS if f"\n### `{n.method}`\n" not in protocol_md
    ]
    assert missing == []


def test_every_handler_and_every_protocol_type_says_what_it_is() -> None:
    """Their docstrings are the doc's descriptions: a new one without is a hole in it."""
    undocumented = [m.name for m in TABLE.methods.values() if not inspect.getdoc(m.handler)]
    types = protocol.Types(protocol._tops())
    undocumented += [
        cls.__qualname__ for cls, s in types.info.items() if s.fields and not cls.__doc__
    ]
    assert undocumented == []


def test_every_method_has_an_example_and_no_other() -> None:
    assert set(EXAMPLES) == set(TABLE.methods)


def test_every_notification_has_an_example_and_no_other() -> None:
    assert set(NOTIFICATION_EXAMPLES) == {n.method for n in protocol.NOTIFICATIONS}


def _shown_members_exist(shown: Any, decoded: Any, path: str = "$") -> list[str]:
    """Members the example shows that decoding dropped: not members of the type (or a default
    the daemon leaves out, which it would never send either)."""
    if isinstance(shown, dict) and isinstance(decoded, dict):
        out = [f"{path}.{k}" for k in shown if k not in decoded]
        for k in shown.keys() & decoded.keys():
            out += _shown_members_exist(shown[k], decoded[k], f"{path}.{k}")
        return out
    if isinstance(shown, list) and isinstance(decoded, list):
        out = []
        for i, (a, b) in enumerate(zip(shown, decoded, strict=True)):
            out += _shown_members_exist(a, b, f"{path}[{i}]")
        return out
    return []


def _fits(example: Any, tp: Any) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(example), type=tp)
    again = msgspec.to_builtins(decoded)
    assert _shown_members_exist(example, again) == []


@pytest.mark.parametrize("name", list(TABLE.methods))
def test_an_example_request_decodes_as_the_server_decodes_it(name: str) -> None:
    method = TABLE.methods[name]
    params = EXAMPLES[name].params
    raw = msgspec.UNSET if params is None else msgspec.Raw(msgspec.json.encode(params))
    decoded = TABLE.decode_params(method, raw)
    if params is not None:
        assert _shown_members_exist(params, msgspec.to_builtins(decoded)) == []


@pytest.mark.parametrize("name", list(TABLE.methods))
def test_an_example_result_decodes_with_the_result_type(name: str) -> None:
    _fits(EXAMPLES[name].result, TABLE.methods[name].result_type)


@pytest.mark.parametrize("notice", protocol.NOTIFICATIONS, ids=lambda n: n.method)
def test_a_notification_example_decodes_with_its_params_type(notice: protocol.Notice) -> None:
    _fits(NOTIFICATION_EXAMPLES[notice.method], notice.params)


def test_the_error_example_is_an_error_reply() -> None:
    _fits(ERROR_EXAMPLE, ErrorReply)


def test_the_example_check_sees_a_member_the_type_lacks() -> None:
    with pytest.raises(AssertionError):
        _fits(
            {"job_id": "j", "next_seq": 1, "nxet_seq": 2},
            TABLE.methods["job/subscribe"].result_type,
        )
    with pytest.raises(msgspec.ValidationError):
        _fits({"job_id": "j"}, TABLE.methods["job/subscribe"].result_type)


def _sent_notifications() -> set[str]:
    """The methods of the notifications codexd's code sends, read from the source: the
    method names given to `publish`, `notify`, `Notification(method=…)`, `_line` and the
    `method` attribute of a notification's params type."""
    found: set[str] = set()

    def const(node: ast.AST | None) -> str | None:
        return (
            node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        )

    for path in sorted((ROOT / "codexd").rglob("*.py")):
        if "docsgen" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if name == "publish" and len(node.args) >= 2:
                    found.add(const(node.args[1]) or "")
                elif name in ("notify", "_line") and node.args:
                    found.add(const(node.args[0]) or "")
                elif name == "Notification":
                    for kw in node.keywords:
                        if kw.arg == "method":
                            found.add(const(kw.value) or "")
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and [
                        getattr(t, "id", None) for t in stmt.targets
                    ] == ["method"]:
                        found.add(const(stmt.value) or "")
    found.discard("")
    return found


def test_every_notification_the_code_sends_is_documented() -> None:
    sent = _sent_notifications()
    assert {"job/event", "subscription/dropped", "config/reloaded", "job/created"} <= sent
    assert sent - {n.method for n in protocol.NOTIFICATIONS} == set()


def test_docs_check_names_a_stale_file_and_how_to_regenerate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(docsgen, "repo_root", lambda: tmp_path)
    assert main(["docs", "--check"]) == 1
    err = capsys.readouterr().err
    for rel in docsgen.GENERATED:
        assert f"{rel} is stale" in err
    assert "make docs" in err

    assert main(["docs"]) == 0
    assert (tmp_path / "docs/protocol.md").read_text(encoding="utf-8") == protocol.render()
    assert main(["docs", "--check"]) == 0
    (tmp_path / "docs/protocol.md").write_text("old\n", encoding="utf-8")
    assert main(["docs", "--check"]) == 1
