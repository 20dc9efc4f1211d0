"""Read `$CODEX_HOME/config.toml` (and `codexd.toml`), validate, and build one snapshot.

Everything here is synchronous and side-effect free apart from reading the files, so a reload
can build the new snapshot off to the side and the store swaps it in only when it is valid.
Every failure is a `ConfigError` located by file, line and dotted key, in the form
`config.toml:12: model_providers.azure.request_max_retries: expected an integer ≤ 100, got "x"`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import tomllib
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

from codexctl.protocol import RESERVED_PROVIDER_IDS, ErrorKind, RpcError
from codexctl.results import ConfigLayer
from codexd.config.schema import (
    DEFAULT_CHATGPT_BASE_URL,
    DEFAULT_MODEL_PROVIDER,
    LMSTUDIO_DEFAULT_PORT,
    OLLAMA_DEFAULT_PORT,
    OPENAI_API_BASE_URL,
    CatalogModel,
    CodexdSettings,
    ConfigSnapshot,
    ConfigToml,
    ModelSelection,
    Price,
    ProfileConfig,
    ProviderConfig,
    overlay,
)
from codexd.httpfields import name_problem, value_problem
from codexd.limits.redis import parse_redis_url
from codexd.security.scrub import looks_like_secret, redact_urls

CONFIG_NAME: Final = "config.toml"
CODEXD_NAME: Final = "codexd.toml"
# A profile file is `$CODEX_HOME/NAME.config.toml`, NAME as Codex accepts it for `--profile`.
PROFILE_SUFFIX: Final = ".config.toml"
_PROFILE_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
# The most profile names an error message lists.
MAX_KNOWN_SHOWN: Final = 20
# The tables codexd.toml may hold (for `codex --strict-config` users).
CODEXD_FILE_TABLES: Final = ("codexd", "model_params")
_LOOPBACK_NAMES: Final = ("localhost",)


class ConfigError(Exception):
    """An invalid configuration, located: which file, which line, which dotted key."""

    def __init__(self, file: str, line: int | None, key: str | None, problem: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = problem
        where = os.path.basename(file) + (f":{line}" if line is not None else "")
        self.message = f"{where}: {key}: {problem}" if key else f"{where}: {problem}"
        super().__init__(self.message)

    def to_rpc_error(self) -> RpcError:
        return RpcError(
            ErrorKind.CONFIG_INVALID, self.message, file=self.file, line=self.line, key=self.key
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigError) and self.message == other.message

    def __hash__(self) -> int:
        return hash(self.message)


# --------------------------------------------------------------------------- profiles


def is_profile_name(name: str) -> bool:
    """A name that may select a profile file: letters, digits, `_` and `-` (as Codex's
    `--profile`), so that it never leaves `$CODEX_HOME`."""
    return _PROFILE_NAME.fullmatch(name) is not None


def profile_path(codex_home: str, name: str) -> str:
    """The profile file of `name` (a plain name: see `is_profile_name`)."""
    return os.path.join(codex_home, name + PROFILE_SUFFIX)


def profile_of(filename: str) -> str | None:
    """The profile a file name in `$CODEX_HOME` holds (`work.config.toml` → `work`), or None."""
    if not filename.endswith(PROFILE_SUFFIX):
        return None
    name = filename[: -len(PROFILE_SUFFIX)]
    return name if is_profile_name(name) else None


class ProfileNotFound(Exception):
    """A profile name with neither a profile file nor a legacy `[profiles.NAME]` table.

    `problem` and `hint` are said apart so that each front door can place them in its own
    words; `str()` is the whole sentence."""

    def __init__(self, name: str, path: str | None, known: Sequence[str]) -> None:
        self.name = name
        self.path = path
        self.known = tuple(known)
        looked = f"no file {path} and " if path is not None else "not a plain name, and "
        shown = ", ".join(self.known[:MAX_KNOWN_SHOWN]) or "none"
        if len(self.known) > MAX_KNOWN_SHOWN:
            shown += f" and {len(self.known) - MAX_KNOWN_SHOWN} more"
        self.problem = f"unknown profile {name!r}"
        self.hint = f"({looked}no [profiles.{name}] table in {CONFIG_NAME}; known: {shown})"
        super().__init__(f"{self.problem} {self.hint}")


def known_profiles(codex_home: str, legacy: Mapping[str, Any] | None) -> list[str]:
    """The profile names that would select something: the profile files in `codex_home`
    and the legacy tables."""
    names = set(legacy or ())
    try:
        entries = os.listdir(codex_home)
    except OSError:
        entries = []
    names.update(n for n in map(profile_of, entries) if n is not None)
    return sorted(names)


# --------------------------------------------------------------------------- locating keys
# tomllib gives values, not positions, and msgspec reports `$.a.b`; a person needs
# `config.toml:12`. This scanner follows table headers and key assignments line by line
# (skipping multi-line strings) and answers the line where a dotted key is written, or that of
# its nearest written ancestor (a table header, or an inline table holding it).

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _parse_key(text: str, start: int) -> tuple[list[str], int] | None:
    """A dotted key starting at `start`: its parts and the index after it."""
    parts: list[str] = []
    i = start
    n = len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return None
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None
            raw = text[i : j + 1]
            try:
                parts.append(json.loads(raw))
            except ValueError:
                parts.append(raw[1:-1])
            i = j + 1
        elif ch == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return None
            parts.append(text[i + 1 : j])
            i = j + 1
        else:
            j = i
            while j < n and text[j] in _BARE:
                j += 1
            if j == i:
                return None
            parts.append(text[i:j])
            i = j
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == ".":
            i += 1
            continue
        return parts, i


def key_lines(text: str) -> list[tuple[tuple[str, ...], int]]:
    """Every written key path with its 1-based line: table headers and assignments."""
    found: list[tuple[tuple[str, ...], int]] = []
    table: tuple[str, ...] = ()
    in_multiline: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if in_multiline in line:
                in_multiline = None
            continue
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            double = stripped.startswith("[[")
            parsed = _parse_key(stripped, 2 if double else 1)
            if parsed is not None:
                parts, end = parsed
                closing = "]]" if double else "]"
                if stripped.startswith(closing, end):
                    table = tuple(parts)
                    found.append((table, lineno))
                    continue
        parsed = _parse_key(line, 0)
        if parsed is None:
            continue
        parts, end = parsed
        if end >= len(line) or line[end] != "=":
            continue
        found.append((table + tuple(parts), lineno))
        value = line[end + 1 :]
        for delim in ('"""', "'''"):
            if value.count(delim) % 2 == 1:
                in_multiline = delim
                break
    return found


def locate(text: str, key: Sequence[str]) -> int | None:
    """The line where `key` is written, else that of its longest written prefix, else None."""
    target = tuple(key)
    best_line: int | None = None
    best_len = 0
    for path, lineno in key_lines(text):
        if path == target:
            return lineno
        if len(path) > best_len and len(path) < len(target) and target[: len(path)] == path:
            best_line, best_len = lineno, len(path)
    return best_line


# --------------------------------------------------------------------------- reading files


class _Source(msgspec.Struct, frozen=True):
    path: str
    text: str
    doc: dict[str, Any]


def _read(path: str) -> _Source | None:
    """The file parsed as TOML, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError(path, None, None, "is a directory, not a file: remove or rename it")
    except OSError as exc:
        raise ConfigError(
            path, None, None, f"cannot be read ({exc.strerror}): check its permissions"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(path, line, None, "is not UTF-8 text: save it as UTF-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, text, exc)
    return _Source(path=path, text=text, doc=doc)


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


def _syntax_error(path: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line: int | None = None
    detail = message
    if match is not None:
        detail = message[: match.start()]
        if match.group(1):
            line = int(match.group(1))
            detail = f"{detail} at column {match.group(2)}"
        else:
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            detail = f"{detail} at the end of the file"
    detail = detail[:1].lower() + detail[1:]
    return ConfigError(path, line, None, f"invalid TOML: {detail}; fix the syntax and save again")


# --------------------------------------------------------------------------- explaining errors


def _show(value: Any) -> str:
    """A value as the message quotes it; never a credential."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if looks_like_secret(value):
            return "a string that looks like a credential"
        value = redact_urls(value)
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return type(value).__name__


def _bound(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)


def _range_text(kind: str, info: Any, value: Any) -> str:
    ge = info.ge if info.ge is not None else info.gt
    le = info.le if info.le is not None else info.lt
    ge_sign = "≥" if info.ge is not None else ">"
    le_sign = "≤" if info.le is not None else "<"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "an integer" and isinstance(value, float):
        is_number = False
    if is_number:
        if ge is not None and (value < ge or (info.gt is not None and value == ge)):
            return f"{kind} {ge_sign} {_bound(ge)}"
        if le is not None:
            return f"{kind} {le_sign} {_bound(le)}"
    if le is not None and (ge is None or ge == 0):
        return f"{kind} {le_sign} {_bound(le)}"
    if ge is not None and le is None:
        return f"{kind} {ge_sign} {_bound(ge)}"
    if ge is not None and le is not None:
        return f"{kind} from {_bound(ge)} to {_bound(le)}"
    return kind


def _describe(info: Any, value: Any) -> str:
    """What a field expects, in words."""
    if isinstance(info, mi.Metadata):  # a described key: the type is inside
        return _describe(info.type, value)
    if isinstance(info, mi.UnionType):
        inner = [t for t in info.types if not isinstance(t, mi.NoneType)]
        if len(inner) == 1:
            return _describe(inner[0], value)
        return " or ".join(_describe(t, value) for t in inner)
    if isinstance(info, mi.IntType):
        return _range_text("an integer", info, value)
    if isinstance(info, mi.FloatType):
        return _range_text("a number", info, value)
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.StrType):
        return "a string"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in info.values)
    if isinstance(info, mi.DictType):
        if isinstance(info.value_type, mi.StrType):
            return "a table of strings"
        return "a table"
    if isinstance(info, mi.StructType):
        return "a table"
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return "an array"
    return "a valid value"


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and `| None` to reach a Struct or dict type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(inner) == 1:
                tp = inner[0]
                continue
        return tp


def _child_type(tp: Any, name: str) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        hints = typing.get_type_hints(tp, include_extras=True)
        return hints.get(name)
    if typing.get_origin(tp) is dict:
        return typing.get_args(tp)[1]
    return None


_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\.\.\.|\d+)\]")


def _parse_path(path: str) -> list[str | None]:
    """`$.a[...].b` → ["a", None, "b"] (None: any key of a table; digits: an index)."""
    parts: list[str | None] = []
    for match in _PATH_PART.finditer(path[1:]):
        name, index = match.group(1), match.group(2)
        if name is not None:
            parts.append(name)
        elif index == "...":
            parts.append(None)
        else:
            parts.append(f"#{index}")
    return parts


def _candidates(
    doc: Any, tp: Any, pattern: Sequence[str | None]
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Every concrete (key path, value, type) that matches a msgspec path pattern."""
    if not pattern:
        yield (), doc, tp
        return
    head, rest = pattern[0], pattern[1:]
    if head is None:
        if isinstance(doc, dict):
            child_tp = _child_type(tp, "")
            for key, value in doc.items():
                for keys, leaf, leaf_tp in _candidates(value, child_tp, rest):
                    yield (str(key), *keys), leaf, leaf_tp
        return
    if head.startswith("#"):
        if isinstance(doc, list):
            index = int(head[1:])
            if index < len(doc):
                inner = typing.get_args(_unwrap(tp))
                for keys, leaf, leaf_tp in _candidates(
                    doc[index], inner[0] if inner else Any, rest
                ):
                    yield (str(index), *keys), leaf, leaf_tp
        return
    if isinstance(doc, dict) and head in doc:
        for keys, leaf, leaf_tp in _candidates(doc[head], _child_type(tp, head), rest):
            yield (head, *keys), leaf, leaf_tp


def _known_fields(tp: Any) -> list[str]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return list(tp.__struct_fields__)
    return []


_MSGSPEC_ERROR = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.S)
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")


class _Located(msgspec.Struct, frozen=True):
    keys: tuple[str, ...]
    problem: str


def _explain(exc: msgspec.ValidationError, doc: dict[str, Any], root: Any) -> _Located:
    match = _MSGSPEC_ERROR.match(str(exc))
    assert match is not None
    pattern = _parse_path(match.group("path") or "$")
    unknown = _UNKNOWN_FIELD.match(match.group("msg"))
    if unknown is not None:
        name = unknown.group("name")
        for keys, value, tp in _candidates(doc, root, pattern):
            if isinstance(value, dict) and name in value:
                known = _known_fields(tp)
                table = ".".join(keys)
                hint = difflib.get_close_matches(name, known, n=1)
                problem = f"unknown key in [{table}]"
                if hint:
                    problem += f"; did you mean `{hint[0]}`?"
                else:
                    problem += f"; known keys: {', '.join(known)}"
                return _Located((*keys, name), problem)
        return _Located((*(p or "" for p in pattern), name), "unknown key")
    found: list[tuple[tuple[str, ...], Any, Any]] = list(_candidates(doc, root, pattern))
    for keys, value, tp in found:
        if tp is None:
            continue
        try:
            msgspec.convert(value, tp)
        except msgspec.ValidationError:
            literal = _unwrap(tp)
            if typing.get_origin(literal) is typing.Literal:
                # In declaration order (type_info sorts them).
                expected = "one of " + ", ".join(json.dumps(v) for v in typing.get_args(literal))
            else:
                expected = _describe(mi.type_info(tp), value)
            return _Located(keys, f"expected {expected}, got {_show(value)}")
    keys = found[0][0] if found else tuple(p or "" for p in pattern)
    return _Located(keys, match.group("msg"))


# --------------------------------------------------------------------------- the two files


def _leaf_overlap(
    a: Mapping[str, Any], b: Mapping[str, Any], prefix: tuple[str, ...]
) -> Iterator[tuple[str, ...]]:
    for key in a.keys() & b.keys():
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            yield from _leaf_overlap(a[key], b[key], (*prefix, key))
        else:
            yield (*prefix, key)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _depth(doc: Any, keys: Sequence[str]) -> int:
    depth = 0
    for key in keys:
        if not isinstance(doc, dict) or key not in doc:
            break
        doc = doc[key]
        depth += 1
    return depth


class _Files:
    """config.toml, codexd.toml and the profile file as read, and which one a key came from:
    the one that writes more of its path (a profile file, laid over the others, on a tie)."""

    def __init__(
        self,
        main: _Source | None,
        main_path: str,
        extra: _Source | None,
        profile: _Source | None = None,
    ) -> None:
        self.main = main
        self.main_path = main_path
        self.extra = extra
        self.profile = profile

    def error(self, keys: Sequence[str], problem: str) -> ConfigError:
        source = self.main
        best = _depth(self.main.doc, keys) if self.main is not None else 0
        if self.extra is not None and _depth(self.extra.doc, keys) > best:
            source, best = self.extra, _depth(self.extra.doc, keys)
        if self.profile is not None:
            depth = _depth(self.profile.doc, keys)
            if depth > 0 and depth >= best:
                source = self.profile
        if source is None:
            return ConfigError(self.main_path, None, ".".join(keys), problem)
        return ConfigError(source.path, locate(source.text, keys), ".".join(keys), problem)


def _merge_sources(main: _Source | None, extra: _Source | None) -> dict[str, Any]:
    doc: dict[str, Any] = dict(main.doc) if main is not None else {}
    if extra is None:
        return doc
    for key in extra.doc:
        if key not in CODEXD_FILE_TABLES:
            raise ConfigError(
                extra.path,
                locate(extra.text, [key]),
                key,
                "codexd.toml holds only the [codexd] and [model_params] tables: "
                "move this key to config.toml",
            )
    for table in CODEXD_FILE_TABLES:
        if table not in extra.doc:
            continue
        if main is not None and table in main.doc:
            first = main.doc[table]
            second = extra.doc[table]
            if not isinstance(first, dict) or not isinstance(second, dict):
                keys: tuple[str, ...] = (table,)
            else:
                keys = next(iter(sorted(_leaf_overlap(first, second, (table,)))), ())
            if keys:
                other = locate(main.text, keys)
                where = CONFIG_NAME + (f":{other}" if other is not None else "")
                raise ConfigError(
                    extra.path,
                    locate(extra.text, keys),
                    ".".join(keys),
                    f"also set in {where}: set it in one file only",
                )
        doc = _deep_merge(doc, {table: extra.doc[table]})
    return doc


# --------------------------------------------------------------------------- checks and building


def builtin_providers(
    openai_base_url: str | None, env: Mapping[str, str]
) -> dict[str, ProviderConfig]:
    """Codex's built-in providers (their ids are reserved)."""
    oss_base = (env.get("CODEX_OSS_BASE_URL") or "").strip()
    port = (env.get("CODEX_OSS_PORT") or "").strip()

    def local(default_port: int) -> str:
        if oss_base:
            return oss_base
        return f"http://localhost:{port if port.isdigit() else default_port}/v1"

    return {
        "openai": ProviderConfig(
            name="OpenAI",
            base_url=openai_base_url or OPENAI_API_BASE_URL,
            env_key="OPENAI_API_KEY",
            requires_openai_auth=True,
            env_http_headers={
                "OpenAI-Organization": "OPENAI_ORGANIZATION",
                "OpenAI-Project": "OPENAI_PROJECT",
            },
        ),
        "ollama": ProviderConfig(name="gpt-oss", base_url=local(OLLAMA_DEFAULT_PORT)),
        "lmstudio": ProviderConfig(name="gpt-oss", base_url=local(LMSTUDIO_DEFAULT_PORT)),
    }


def is_loopback(address: str) -> bool:
    """`host:port` (or `[v6]:port`) whose host is a loopback address or `localhost`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return False
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_CATALOG_DECODER: Final = msgspec.json.Decoder()


class _Level(msgspec.Struct):
    effort: str


class _CatalogEntry(msgspec.Struct):
    slug: str
    display_name: str | None = None
    description: str | None = None
    context_window: int | None = None
    default_reasoning_level: str | None = None
    supported_reasoning_levels: list[str | _Level] | None = None
    price: Price | None = None


class _CatalogFile(msgspec.Struct):
    models: list[_CatalogEntry]


def decode_catalog(raw: bytes) -> tuple[CatalogModel, ...]:
    """A catalog in Codex's models.json format (`{"models": [...]}` or a bare list).

    Raises msgspec.DecodeError / ValidationError.
    """
    decoded = msgspec.json.decode(raw, type=_CatalogFile | list[_CatalogEntry])
    entries = decoded.models if isinstance(decoded, _CatalogFile) else decoded
    models = []
    for entry in entries:
        levels = None
        if entry.supported_reasoning_levels is not None:
            levels = tuple(
                level if isinstance(level, str) else level.effort
                for level in entry.supported_reasoning_levels
            )
        models.append(
            CatalogModel(
                slug=entry.slug,
                display_name=entry.display_name,
                description=entry.description,
                context_window=entry.context_window,
                default_reasoning_level=entry.default_reasoning_level,
                supported_reasoning_levels=levels,
                price=entry.price,
            )
        )
    return tuple(models)


def _check(
    cfg: ConfigToml,
    files: _Files,
    env: Mapping[str, str],
    base_dir: str,
    *,
    legacy: bool,
    layers: tuple[ConfigLayer, ...],
) -> ConfigSnapshot:
    """Every check past the types, one table at a time (in the order their errors are
    reported), then the snapshot. `legacy`: `cfg.profile` names a `[profiles.NAME]` table
    (a profile file is already merged into `cfg`)."""
    providers = _check_providers(cfg, files, env)
    top, active, effective = _check_selection(cfg, files, providers, legacy=legacy)
    settings = cfg.codexd
    _check_codexd(settings, files, providers)
    catalog_path, catalog_models = _check_catalog(cfg, files, base_dir)
    return ConfigSnapshot(
        path=files.main_path,
        codexd_path=os.path.join(os.path.dirname(files.main_path), CODEXD_NAME),
        profile=cfg.profile,
        model=effective.model,
        model_provider=effective.model_provider,
        model_context_window=effective.model_context_window,
        model_reasoning_effort=effective.model_reasoning_effort,
        model_reasoning_summary=effective.model_reasoning_summary,
        model_verbosity=effective.model_verbosity,
        openai_base_url=cfg.openai_base_url,
        chatgpt_base_url=(active.chatgpt_base_url if active and active.chatgpt_base_url else None)
        or cfg.chatgpt_base_url
        or DEFAULT_CHATGPT_BASE_URL,
        cli_auth_credentials_store=cfg.cli_auth_credentials_store,
        forced_login_method=cfg.forced_login_method,
        model_catalog_json=catalog_path,
        model_params=cfg.model_params,
        providers=providers,
        profiles=dict(cfg.profiles),
        codexd=settings,
        top_level=top,
        catalog_models=catalog_models,
        layers=layers,
    )


def _check_providers(
    cfg: ConfigToml, files: _Files, env: Mapping[str, str]
) -> dict[str, ProviderConfig]:
    """`[model_providers.*]`: no built-in id, a non-empty name, sendable headers; the result
    is the built-ins plus these."""
    for provider_id in cfg.model_providers:
        if provider_id in RESERVED_PROVIDER_IDS:
            raise files.error(
                ("model_providers", provider_id),
                f"`{provider_id}` is a built-in provider and cannot be overridden: "
                f"rename your custom provider (for example, `{provider_id}-custom`)",
            )
        if cfg.model_providers[provider_id].name == "":
            raise files.error(
                ("model_providers", provider_id, "name"), "provider name must not be empty"
            )
    for provider_id, provider in cfg.model_providers.items():
        _check_headers(provider_id, provider, files, env)
    providers = builtin_providers(cfg.openai_base_url, env)
    for provider_id, provider in cfg.model_providers.items():
        providers[provider_id] = (
            provider
            if provider.name is not None
            else msgspec.structs.replace(provider, name=provider_id)
        )
    return providers


def _check_selection(
    cfg: ConfigToml, files: _Files, providers: Mapping[str, ProviderConfig], *, legacy: bool
) -> tuple[ModelSelection, ProfileConfig | None, ModelSelection]:
    """`[profiles.*]` and `model_provider`: the effective provider is defined. Returns the
    top-level settings, the active legacy profile and the effective settings. (That the
    profile exists was checked when its layer was chosen: `_layer_profile`.)"""
    active = cfg.profiles.get(cfg.profile) if legacy and cfg.profile is not None else None
    top = ModelSelection(
        profile=None,
        model=cfg.model,
        model_provider=cfg.model_provider or DEFAULT_MODEL_PROVIDER,
        model_context_window=cfg.model_context_window,
        model_reasoning_effort=cfg.model_reasoning_effort,
        model_reasoning_summary=cfg.model_reasoning_summary,
        model_verbosity=cfg.model_verbosity,
    )
    effective = overlay(top, cfg.profile, active)
    if effective.model_provider not in providers:
        key: tuple[str, ...] = ("model_provider",)
        if active is not None and active.model_provider is not None:
            key = ("profiles", str(cfg.profile), "model_provider")
        raise files.error(
            key,
            f"unknown provider {json.dumps(effective.model_provider)}: define "
            f"[model_providers.{effective.model_provider}] or use one of "
            + ", ".join(sorted(providers)),
        )

    return top, active, effective


def _check_codexd(
    settings: CodexdSettings, files: _Files, providers: Mapping[str, ProviderConfig]
) -> None:
    """`[codexd]` and its sub-tables: rate limits name a provider and a valid backend; the
    gateway stays on loopback; the issuer is an http(s) URL."""
    for provider_id, limits in settings.rate_limits.items():
        if provider_id not in providers:
            raise files.error(
                ("codexd", "rate_limits", provider_id),
                f"no provider {json.dumps(provider_id)}: rate limits apply to one of "
                + ", ".join(sorted(providers)),
            )
        if limits.backend is not None:
            try:
                parse_redis_url(limits.backend)
            except ValueError:
                # Not the parser's words: they can quote a part of the URL (a password with a
                # `?` or `/` in it is read as the port).
                raise files.error(
                    ("codexd", "rate_limits", provider_id, "backend"),
                    "expected a redis:// (or rediss://, unix://) URL such as "
                    '"redis://user:password@host:6379/0"; characters such as ? # / @ in the '
                    "password must be percent-encoded",
                ) from None
    if settings.gateway.tcp is not None and not is_loopback(settings.gateway.tcp):
        raise files.error(
            ("codexd", "gateway", "tcp"),
            'expected a loopback address such as "127.0.0.1:8765", '
            f"got {_show(settings.gateway.tcp)}: the gateway must not be reachable from "
            "other machines",
        )
    if not settings.auth_issuer.startswith(("https://", "http://")):
        raise files.error(
            ("codexd", "auth_issuer"), f"expected an http(s) URL, got {_show(settings.auth_issuer)}"
        )


def _check_catalog(
    cfg: ConfigToml, files: _Files, base_dir: str
) -> tuple[str | None, tuple[CatalogModel, ...]]:
    """`model_catalog_json`: readable and in Codex's format (its path, and its models)."""
    catalog_path = None
    catalog_models: tuple[CatalogModel, ...] = ()
    if cfg.model_catalog_json:
        catalog_path = os.path.join(base_dir, os.path.expanduser(cfg.model_catalog_json))
        try:
            with open(catalog_path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise files.error(
                ("model_catalog_json",),
                f"cannot read the model catalog {catalog_path} ({exc.strerror}): "
                "fix the path or remove the key",
            )
        try:
            catalog_models = decode_catalog(raw)
        except msgspec.DecodeError as exc:
            raise files.error(
                ("model_catalog_json",), f"the model catalog {catalog_path} is not valid: {exc}"
            )
    return catalog_path, catalog_models


def _check_headers(
    provider_id: str, provider: ProviderConfig, files: _Files, env: Mapping[str, str]
) -> None:
    """A header the transport would refuse fails the load, not every job later. The value of
    an `env_http_headers` variable is checked (it is read from the same environment when a
    job runs) and never quoted."""
    for table in ("http_headers", "env_http_headers"):
        for name, value in (getattr(provider, table) or {}).items():
            key = ("model_providers", provider_id, table, name)
            problem = name_problem(name)
            if problem is not None:
                raise files.error(key, f"{json.dumps(name)} {problem}")
            if table == "http_headers":
                problem = value_problem(value)
                if problem is not None:
                    raise files.error(key, f"the value {problem}: remove it")
                continue
            sent = env.get(value)
            problem = value_problem(sent) if sent else None
            if problem is not None:
                raise files.error(
                    key,
                    f"the environment variable {value} {problem}: fix it in the daemon's "
                    "environment",
                )


def _layer_profile(
    doc: dict[str, Any],
    files: _Files,
    layers: list[ConfigLayer],
    name: str,
    *,
    requested: bool,
) -> tuple[dict[str, Any], bool]:
    """Lay profile `name` over `doc`: its file `$CODEX_HOME/NAME.config.toml` merged in (as
    Codex merges layers: tables key by key, any other value replaced), else its legacy
    `[profiles.NAME]` table (applied later, by `_check_selection`). Returns the document and
    whether the profile is a legacy table. Neither: ProfileNotFound when the name was
    `requested` by a caller, else the located error of the `profile` key."""
    home = os.path.dirname(files.main_path)
    plain = is_profile_name(name)
    source = _read(profile_path(home, name)) if plain else None
    if source is not None:
        if "profile" in source.doc:
            raise ConfigError(
                source.path,
                locate(source.text, ["profile"]),
                "profile",
                f"a profile file cannot select a profile: remove the key (`profile` "
                f"belongs in {CONFIG_NAME})",
            )
        files.profile = source
        layers.append(ConfigLayer(path=source.path, kind="profile", profile=name))
        return {**_deep_merge(doc, source.doc), "profile": name}, False
    tables = doc.get("profiles")
    tables = tables if isinstance(tables, dict) else {}
    if isinstance(tables.get(name), dict):
        layers.append(ConfigLayer(path=files.main_path, kind="legacy_profile", profile=name))
        return {**doc, "profile": name}, True
    missing = ProfileNotFound(
        name, profile_path(home, name) if plain else None, known_profiles(home, tables)
    )
    if requested:
        raise missing
    raise files.error(
        ("profile",),
        f"profile {json.dumps(name)} is not defined {missing.hint}: create the file, add "
        "the table or change `profile`",
    )


def _build(
    main: _Source | None,
    main_path: str,
    extra: _Source | None,
    env: Mapping[str, str] | None,
    *,
    profile: str | None = None,
) -> ConfigSnapshot:
    env = os.environ if env is None else env
    files = _Files(main, main_path, extra)
    doc = _merge_sources(main, extra)
    layers = [ConfigLayer(path=main_path, kind="config")]  # missing: every default
    if extra is not None:
        layers.append(ConfigLayer(path=extra.path, kind="codexd"))
    name = profile if profile is not None else doc.get("profile")
    legacy = False
    if isinstance(name, str):
        doc, legacy = _layer_profile(doc, files, layers, name, requested=profile is not None)
    try:
        cfg = msgspec.convert(doc, ConfigToml)
    except msgspec.ValidationError as exc:
        located = _explain(exc, doc, ConfigToml)
        raise files.error(located.keys, located.problem)
    return _check(
        cfg, files, env, os.path.dirname(main_path), legacy=legacy, layers=tuple(layers)
    )


def default_config(env: Mapping[str, str] | None = None) -> ConfigSnapshot:
    """The effective config when neither file exists (every key at its default)."""
    return _build(None, CONFIG_NAME, None, env)


def load_config(
    codex_home: str, env: Mapping[str, str] | None = None, *, profile: str | None = None
) -> ConfigSnapshot:
    """The effective config of `codex_home`: config.toml + codexd.toml (missing = defaults),
    with the profile of config.toml's `profile` key laid over them, or `profile` instead
    when given (its file, else its legacy table).

    Raises ConfigError; ProfileNotFound when `profile` names neither a file nor a table.
    """
    main_path = os.path.join(codex_home, CONFIG_NAME)
    main = _read(main_path)
    extra = _read(os.path.join(codex_home, CODEXD_NAME))
    return _build(main, main_path, extra, env, profile=profile)


# Every top-level key of Codex's own config.toml (as of late 2025, old and new), and codexd's:
# a key outside this set is ignored by both, most likely a typo.
CODEX_TOP_LEVEL_KEYS: Final = frozenset(
    {
        *ConfigToml.__struct_fields__,
        "agents", "analytics", "approval_policy", "check_for_update_on_startup",
        "compact_prompt", "developer_instructions", "disable_paste_burst",
        "experimental_compact_prompt_file", "experimental_instructions_file",
        "experimental_sandbox_command_assessment", "experimental_use_freeform_apply_patch",
        "experimental_use_rmcp_client", "experimental_use_unified_exec_tool", "features",
        "feedback", "file_opener", "forced_chatgpt_workspace_id", "ghost_snapshot",
        "hide_agent_reasoning", "history", "include_apply_patch_tool", "include_plan_tool",
        "instructions", "mcp_oauth_callback_port", "mcp_oauth_credentials_store",
        "mcp_servers", "model_auto_compact_token_limit", "model_auto_compact_token_limit_scope",
        "model_instructions_file", "model_max_output_tokens", "model_reasoning_summary_format",
        "model_supports_reasoning_summaries", "notice", "notify", "oss_provider", "otel",
        "personality", "plan_mode_reasoning_effort", "preferred_auth_method",
        "project_doc_fallback_filenames", "project_doc_max_bytes", "project_root_markers",
        "projects", "review_model", "sandbox_mode", "sandbox_workspace_write", "service_tier",
        "shell_environment_policy", "show_raw_agent_reasoning", "skills",
        "suppress_unstable_features_warning", "tools", "tools_view_image",
        "tools_web_search_request", "tui", "use_experimental_reasoning_summary",
        "use_experimental_streamable_shell_tool", "use_experimental_unified_exec_tool",
        "web_search", "windows", "windows_wsl_setup_acknowledged",
    }
)  # fmt: skip


def unknown_key_warnings(path: str) -> list[str]:
    """One line per top-level key of a config.toml that neither Codex nor codexd knows, with
    a did-you-mean when a known key is close (`openai_base_ur`). Codex tolerates such keys, so
    these are warnings, not errors. Raises ConfigError as `load_file` does."""
    path = os.path.abspath(path)
    source = _read(path)
    if source is None or os.path.basename(path) == CODEXD_NAME:
        return []
    warnings = []
    for key in source.doc:
        if key in CODEX_TOP_LEVEL_KEYS:
            continue
        line = locate(source.text, [key])
        where = os.path.basename(path) + (f":{line}" if line is not None else "")
        text = f"{where}: {key}: not a key Codex or codexd knows, so both ignore it"
        close = difflib.get_close_matches(key, sorted(CODEX_TOP_LEVEL_KEYS), n=1, cutoff=0.75)
        if close:
            text += f": did you mean {close[0]}?"
        warnings.append(text)
    return warnings


def load_file(path: str, env: Mapping[str, str] | None = None) -> ConfigSnapshot:
    """Validate one file on its own (`codexctl config check FILE`).

    A file named codexd.toml is checked as one (only [codexd] and [model_params]); a profile
    file (`NAME.config.toml`) as the profile NAME laid over the config.toml beside it; any
    other name as a config.toml. Raises ConfigError (also when the file does not exist).
    """
    path = os.path.abspath(path)
    source = _read(path)
    if source is None:
        raise ConfigError(path, None, None, "no such file")
    if os.path.basename(path) == CODEXD_NAME:
        return _build(None, os.path.join(os.path.dirname(path), CONFIG_NAME), source, env)
    profile = profile_of(os.path.basename(path))
    if profile is not None:
        return load_config(os.path.dirname(path), env, profile=profile)
    return _build(source, path, None, env)
