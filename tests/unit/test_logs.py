"""Log lines as journald and a JSON reader see them."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codexd.logs import configure_logging, journal_attached, mask_secrets, parse_level

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(level: str = "info", fmt: str = "plain", **env: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, env=env, stream=stream)  # type: ignore[arg-type]
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def raise_and_log(logger: logging.Logger) -> None:
    try:
        raise RuntimeError("upstream went away\nsecond line")
    except RuntimeError:
        logger.exception("job %s failed", "job_1")


def test_plain_lines_have_a_timestamp_level_and_logger() -> None:
    out = capture()
    log = logging.getLogger("codexd.rpc")
    log.info("listening on %s", "/run/user/1000/codexd/codexd.sock")
    log.debug("not shown at info")
    (line,) = lines(out)
    assert re.fullmatch(
        TS + r" INFO    codexd\.rpc: listening on /run/user/1000/codexd/codexd\.sock", line
    )


def test_journald_gets_priorities_and_no_timestamps() -> None:
    out = capture("debug", JOURNAL_STREAM="8:1234")
    log = logging.getLogger("codexd.daemon")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert lines(out) == [
        "<7>codexd.daemon: d",
        "<6>codexd.daemon: i",
        "<4>codexd.daemon: w",
        "<3>codexd.daemon: e",
    ]


def test_journal_stream_must_name_our_stderr_when_it_is_a_file(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as f:
        st = os.fstat(f.fileno())
        assert journal_attached({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
        # inherited from a journald-logged parent, but stderr now goes to a file
        assert not journal_attached({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f)
        assert not journal_attached({}, f)


def test_a_traceback_stays_on_one_plain_line() -> None:
    out = capture(JOURNAL_STREAM="8:1")
    raise_and_log(logging.getLogger("codexd.jobs"))
    (line,) = lines(out)
    assert line.startswith("<3>codexd.jobs: job job_1 failed | Traceback (most recent call last):")
    assert "RuntimeError: upstream went away\\nsecond line" in line
    assert "\\n  File " in line


def test_json_lines_with_extra_fields_and_exc() -> None:
    out = capture(fmt="json")
    log = logging.getLogger("codexd.jobs")
    log.info("job %s done", "job_1", extra={"job_id": "job_1", "tokens": 42, "path": Path("/x")})
    raise_and_log(log)
    first, second = (msgspec.json.decode(line) for line in lines(out))
    assert re.fullmatch(TS, first.pop("ts"))
    assert first == {
        "level": "info",
        "logger": "codexd.jobs",
        "msg": "job job_1 done",
        "job_id": "job_1",
        "tokens": 42,
        "path": "PosixPath('/x')",
    }
    assert second["level"] == "error"
    assert second["exc"].startswith("Traceback (most recent call last):\n")
    assert second["exc"].endswith("RuntimeError: upstream went away\nsecond line")


def test_plain_extra_fields_are_key_value() -> None:
    out = capture(JOURNAL_STREAM="8:1")
    logging.getLogger("codexd.rpc").warning(
        "refused", extra={"peer_uid": 1001, "client": "my tool"}
    )
    assert lines(out) == ['<4>codexd.rpc: refused peer_uid=1001 client="my tool"']


def test_reconfiguring_replaces_the_handler_and_leaves_others() -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    first = capture()
    second = capture("warning", JOURNAL_STREAM="8:1")
    logging.getLogger("codexd").info("hidden")
    logging.getLogger("codexd").warning("shown")
    assert first.getvalue() == ""
    assert lines(second) == ["<4>codexd: shown"]
    assert other in logging.getLogger().handlers


def test_chatty_libraries_are_quiet_unless_debugging() -> None:
    out = capture("info", JOURNAL_STREAM="8:1")
    logging.getLogger("httpx").info("HTTP Request: POST https://api.openai.com/v1/responses")
    assert out.getvalue() == ""
    out = capture("debug", JOURNAL_STREAM="8:1")
    logging.getLogger("httpx").info("HTTP Request: POST https://api.openai.com/v1/responses")
    assert lines(out) == ["<6>httpx: HTTP Request: POST https://api.openai.com/v1/responses"]


def test_token_shaped_strings_are_masked() -> None:
    out = capture(fmt="json")
    logging.getLogger("codexd.auth").warning(
        "header Authorization: Bearer abc.def.ghi, key sk-proj-ABCDEFGHIJKLMNOP",
        extra={"token": "eyJhbGciOiJSUzI1.eyJzdWIiOiIxMjM0.c2lnbmF0dXJl"},
    )
    text = out.getvalue()
    assert "abc.def" not in text
    assert "ABCDEFGHIJ" not in text
    assert "eyJhbGci" not in text
    assert msgspec.json.decode(text)["msg"] == (
        "header Authorization: Bearer [redacted], key [redacted]"
    )


@pytest.mark.parametrize(("bad", "message"), [("verbose", "unknown log level"), ("", "level")])
def test_unknown_level(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_level(bad)
    assert parse_level(" WARNING ") == logging.WARNING


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="use plain or json"):
        configure_logging("info", "xml", env={}, stream=io.StringIO())  # type: ignore[arg-type]


@given(msg=st.text(), journal=st.booleans())
def test_every_record_is_exactly_one_line(msg: str, journal: bool) -> None:
    for fmt in ("plain", "json"):
        stream = io.StringIO()
        env = {"JOURNAL_STREAM": "8:1"} if journal else {}
        handler = configure_logging("debug", fmt, env=env, stream=stream)  # type: ignore[arg-type]
        logging.getLogger("codexd.x").info(msg, extra={"field": msg})
        text = stream.getvalue()
        assert text.endswith("\n")
        assert "\n" not in text[:-1]
        assert "\r" not in text
        logging.getLogger().removeHandler(handler)


def test_mask_secrets_leaves_ordinary_text() -> None:
    text = "model gpt-5 used 1200 tokens; sk-short; bearer"
    assert mask_secrets(text) == text


PIECES = ["Bearer ", "bearer", " ", "sk-", "abcdefghijkl", "eyJ", ".", '"', "\\", "}", ",", "\n"]


@given(msg=st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_json_stays_valid_whatever_is_masked(msg: str) -> None:
    stream = io.StringIO()
    handler = configure_logging("info", "json", env={}, stream=stream)
    logging.getLogger("codexd.x").info(msg, extra={"f": msg})
    event = msgspec.json.decode(stream.getvalue())
    assert event["msg"] == mask_secrets(msg)
    logging.getLogger().removeHandler(handler)
