"""The daemon's credentials, and the one place that refreshes them.

Refresh tokens are single-use upstream, so a refresh is:
- single-flight in the process: the first caller that needs one runs it, every other caller
  waits for that same refresh (an `anyio.Event`) and shares its outcome;
- serialised across processes: under Codex's `flock` on `$CODEX_HOME/auth.lock` the store is
  re-read, and tokens another program already refreshed are adopted instead of spending the
  old refresh token again; only then is the issuer called and the result written atomically.

Secrets are `Secret`s: nothing here logs, raises or returns a token in clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import anyio
import msgspec

from codexctl.protocol import ErrorKind, RpcError
from codexctl.results import AccountInfo, CredentialSource
from codexd.auth.authfile import (
    AuthDocument,
    LockTimeout,
    TokenSet,
    auth_file_path,
    format_time,
    hold_auth_lock,
)
from codexd.auth.oauth import OAuthFailure, RefreshReason, TokenGrant
from codexd.auth.stores import CredentialStore, StoreError
from codexd.auth.tokens import Secret

log = logging.getLogger("codexd.auth")

REFRESH_WINDOW_S: Final = 5 * 60
LEGACY_REFRESH_INTERVAL_S: Final = 8 * 24 * 3600  # only when the access token has no `exp`
DEFAULT_ENV_KEY: Final = "OPENAI_API_KEY"
DEFAULT_RETRY_DELAYS: Final = (0.5, 1.0, 2.0)
# Wire APIs the ChatGPT backend does not serve: only an API key reaches them.
API_KEY_ONLY_APIS: Final = frozenset({"embeddings"})

Refresher = Callable[[Secret, RefreshReason], Awaitable[TokenGrant | OAuthFailure]]
CredentialMode = Literal["api_key", "chatgpt", "none"]
ForcedLoginMethod = Literal["chatgpt", "api"]


class ProviderAuth(Protocol):
    """What the session needs to know of a provider (config.schema.ProviderRef fits).

    `requires_openai_auth`: the provider takes the OpenAI login (the built-in `openai` and
    custom providers that say so); `bearer_token`: its `experimental_bearer_token`."""

    @property
    def id(self) -> str: ...

    @property
    def env_key(self) -> str | None: ...

    @property
    def requires_openai_auth(self) -> bool: ...

    @property
    def bearer_token(self) -> str | None: ...


class Provider(msgspec.Struct, frozen=True):
    id: str = "openai"
    env_key: str | None = DEFAULT_ENV_KEY
    requires_openai_auth: bool = False
    bearer_token: str | None = None


OPENAI: Final = Provider(requires_openai_auth=True)


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """What a request needs. `bearer` is None only for a provider that needs no key."""

    mode: CredentialMode
    source: CredentialSource | None
    bearer: Secret | None
    account_id: str | None = None

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.bearer is not None:
            out["Authorization"] = f"Bearer {self.bearer.reveal()}"
        if self.mode == "chatgpt" and self.account_id:
            out["ChatGPT-Account-ID"] = self.account_id
        return out

    def __repr__(self) -> str:
        return f"Credentials(mode={self.mode}, source={self.source})"


def key_hint(key: str) -> str:
    """Codex's mask: the first 8 and last 5 characters around `***`; only `***` when that
    would show most of a short key."""
    return "***" if len(key) <= 13 else f"{key[:8]}***{key[-5:]}"


def needs_refresh(tokens: TokenSet, last_refresh: datetime | None, now: float) -> bool:
    """Codex's rule: the access token's `exp` within 5 minutes; without `exp`, 8 days."""
    exp = tokens.access_claims.exp
    if exp is not None:
        return exp - now <= REFRESH_WINDOW_S
    if last_refresh is None:
        return False
    return now - last_refresh.timestamp() > LEGACY_REFRESH_INTERVAL_S


def same_tokens(a: TokenSet | None, b: TokenSet | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.refresh_token == b.refresh_token and a.access_token == b.access_token


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        return format_time(datetime.fromtimestamp(seconds, UTC))
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(eq=False)
class _Flight:
    """One refresh in progress; the callers that joined it wait on `done`."""

    done: anyio.Event = field(default_factory=anyio.Event)
    result: Credentials | None = None
    error: tuple[ErrorKind, str, dict[str, object]] | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    def outcome(self) -> Credentials:
        if self.error is not None:
            kind, message, data = self.error
            raise RpcError(kind, message, **data)
        assert self.result is not None
        return self.result


def _error_parts(exc: RpcError) -> tuple[ErrorKind, str, dict[str, object]]:
    data = msgspec.structs.asdict(exc.data)
    data.pop("kind")
    return ErrorKind(exc.kind), exc.message, {k: v for k, v in data.items() if v is not None}


class AuthSession:
    def __init__(
        self,
        *,
        codex_home: str,
        store: CredentialStore,
        refresher: Refresher,
        env: Mapping[str, str],
        forced_login_method: ForcedLoginMethod | None = None,
        clock: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        lock_timeout_s: float = 30.0,
        refresh_timeout_s: float = 120.0,
    ) -> None:
        self.codex_home = codex_home
        self.store = store
        self.forced_login_method = forced_login_method
        self._refresher = refresher
        self._env = env
        self._clock = clock
        self._retry_delays = tuple(retry_delays)
        self._lock_timeout_s = lock_timeout_s
        self._refresh_timeout_s = refresh_timeout_s
        self._doc: AuthDocument | None = None
        self._flight: _Flight | None = None
        self._state_lock = anyio.Lock()
        # A refresh token the issuer refused for good, and why: fail fast until it changes.
        self._dead: tuple[Secret, tuple[ErrorKind, str, dict[str, object]]] | None = None
        self.refresh_count = 0  # refreshes sent to the issuer (status and tests)

    def __repr__(self) -> str:
        mode = self._doc.mode if self._doc else None
        return f"AuthSession(store={self.store.name}, stored_mode={mode})"

    # ------------------------------------------------------------------ loading

    async def load(self) -> None:
        """Read the store once at start-up. An unreadable store is logged, not fatal."""
        async with self._state_lock:
            try:
                self._doc = await self.store.load()
            except StoreError as exc:
                log.warning("cannot read the stored login: %s", exc)

    async def reload_from_disk(self) -> bool:
        """Adopt what another program wrote (the file watcher calls this). True if it changed.

        A document whose `last_refresh` is older than ours for the same refresh lineage is a
        stale snapshot someone wrote back; it is ignored so a spent refresh token is not taken.
        """
        async with self._state_lock:
            try:
                doc = await self.store.load()
            except StoreError as exc:
                log.warning("cannot read the stored login: %s", exc)
                return False
            if self._is_stale(doc):
                log.warning(
                    "another program wrote older tokens than the ones codexd holds; keeping ours"
                )
                return False
            changed = not self._same_doc(doc)
            self._doc = doc
            if changed:
                log.info("adopted the login stored by another program")
            return changed

    def _same_doc(self, doc: AuthDocument | None) -> bool:
        if doc is None or self._doc is None:
            return doc is self._doc
        return (
            doc.mode == self._doc.mode
            and doc.api_key == self._doc.api_key
            and same_tokens(doc.tokens, self._doc.tokens)
        )

    def _is_stale(self, doc: AuthDocument | None) -> bool:
        ours = self._doc
        if doc is None or ours is None or doc.chatgpt_tokens is None or ours.chatgpt_tokens is None:
            return False
        if doc.last_refresh is None or ours.last_refresh is None:
            return False
        same_account = doc.chatgpt_tokens.account_id == ours.chatgpt_tokens.account_id
        return same_account and doc.last_refresh < ours.last_refresh

    # ------------------------------------------------------------------ choosing a credential

    def _unauthenticated(self, provider: ProviderAuth, env_key: str | None) -> RpcError:
        where = (
            f"set {env_key} in the daemon's environment (a service does not inherit your "
            "shell's: put it in ~/.config/codexd/env and restart codexd)"
        )
        if provider.requires_openai_auth:
            if self.forced_login_method == "chatgpt":
                return RpcError(
                    ErrorKind.UNAUTHENTICATED,
                    'not logged in: forced_login_method = "chatgpt" requires a ChatGPT login: '
                    "run codexctl login",
                )
            return RpcError(
                ErrorKind.UNAUTHENTICATED,
                f"not logged in: run codexctl login, or {where}",
            )
        return RpcError(
            ErrorKind.UNAUTHENTICATED,
            f"no API key for provider {provider.id}: {where}",
        )

    def rejected(self, credentials: Credentials, provider: ProviderAuth, status: str) -> str:
        """What to tell a person when upstream refused `credentials` (`status` is e.g. `401
        invalid_api_key`): which credential it was, and what to do about that one."""
        if credentials.source == "config":
            return (
                f"upstream rejected the experimental_bearer_token of provider {provider.id} "
                f"({status}): correct it in config.toml"
            )
        if credentials.source == "env":
            env_key = provider.env_key or DEFAULT_ENV_KEY
            return (
                f"upstream rejected the API key in {env_key} of the daemon's environment "
                f"({status}): correct {env_key} where codexd gets its environment (for the "
                "service: ~/.config/codexd/env) and restart codexd"
            )
        where = (
            "the keyring" if credentials.source == "keyring" else auth_file_path(self.codex_home)
        )
        if credentials.mode == "chatgpt":
            return (
                f"upstream rejected the ChatGPT login stored in {where} ({status}): "
                "log in again with codexctl login"
            )
        return (
            f"upstream rejected the API key stored in {where} ({status}): store a valid one "
            "with codexctl login --api-key, or remove it with codexctl logout"
        )

    def _stored_source(self) -> CredentialSource:
        return self.store.source

    def _choose(self, provider: ProviderAuth) -> Credentials | TokenSet | RpcError:
        """Which credential a request uses (pure).

        A stored ChatGPT login first, then the provider's environment variable, then a stored
        API key; `forced_login_method` narrows the choice. A TokenSet means: the stored
        ChatGPT login.
        """
        env_key = provider.env_key or DEFAULT_ENV_KEY
        env_value = self._env.get(env_key)
        env_creds = Credentials("api_key", "env", Secret(env_value)) if env_value else None
        if provider.bearer_token and not (provider.env_key and env_value):
            # Codex's order: the provider's env_key when it is set, else its bearer token,
            # and only then a login.
            return Credentials("api_key", "config", Secret(provider.bearer_token))
        if not provider.requires_openai_auth:
            if provider.env_key is None:
                return Credentials("none", None, None)
            return env_creds or self._unauthenticated(provider, env_key)
        doc = self._doc
        tokens = doc.chatgpt_tokens if doc else None
        stored_key = (
            Credentials("api_key", self._stored_source(), doc.api_key)
            if doc is not None and doc.api_key is not None
            else None
        )
        if self.forced_login_method == "chatgpt":
            return tokens or self._unauthenticated(provider, env_key)
        if self.forced_login_method == "api":
            return env_creds or stored_key or self._unauthenticated(provider, env_key)
        return tokens or env_creds or stored_key or self._unauthenticated(provider, env_key)

    def _for_api(
        self, choice: Credentials | TokenSet | RpcError, provider: ProviderAuth, api: str | None
    ) -> Credentials | TokenSet | RpcError:
        """The ChatGPT backend serves only Responses: an API the login cannot reach
        (embeddings) needs an API key, and is refused before anything goes upstream."""
        if api in API_KEY_ONLY_APIS and isinstance(choice, TokenSet):
            return self._needs_api_key(provider, api)
        return choice

    def _needs_api_key(self, provider: ProviderAuth, api: str | None) -> RpcError:
        env_key = provider.env_key or DEFAULT_ENV_KEY
        return RpcError(
            ErrorKind.UNAUTHENTICATED,
            f"{api} need an API key, but provider {provider.id} uses the ChatGPT login "
            f"(ChatGPT serves no {api}): run codexctl login --api-key (it replaces the ChatGPT "
            f'login), or set {env_key} in the daemon\'s environment and forced_login_method = '
            '"api" in config.toml',
        )

    def check_credentials(self, provider: ProviderAuth, api: str | None = None) -> RpcError | None:
        """Whether a request to `provider` (on wire API `api`) has any credential at all
        (submit-time refusal): the error a job would fail with, or None. Refreshes nothing."""
        choice = self._for_api(self._choose(provider), provider, api)
        return choice if isinstance(choice, RpcError) else None

    def _chatgpt_credentials(self, tokens: TokenSet) -> Credentials:
        account_id = tokens.account_id or tokens.id_claims.account_id
        return Credentials("chatgpt", self._stored_source(), tokens.access_token, account_id)

    async def credentials(
        self, provider: ProviderAuth = OPENAI, api: str | None = None
    ) -> Credentials:
        """The credential for a request to `provider` (on wire API `api`), refreshed first
        when it is about to expire.

        Raises RpcError `unauthenticated` (nothing usable, or an API key needed) or
        `auth_expired` (sign in again).
        """
        choice = self._for_api(self._choose(provider), provider, api)
        if isinstance(choice, RpcError):
            raise choice
        if isinstance(choice, Credentials):
            return choice
        doc = self._doc
        now = self._clock()
        if not needs_refresh(choice, doc.last_refresh if doc else None, now):
            return self._chatgpt_credentials(choice)
        try:
            return await self._refresh_shared("proactive_expiry", choice)
        except RpcError:
            # Codex keeps using an access token that has not expired yet when a proactive
            # refresh fails; the next request tries again (a dead refresh token fails fast).
            exp = choice.access_claims.exp
            current = self._doc.chatgpt_tokens if self._doc else None
            if exp is not None and exp > now and same_tokens(current, choice):
                log.warning("using the current access token until it expires at %s", _rfc3339(exp))
                return self._chatgpt_credentials(choice)
            raise

    async def refresh(
        self,
        reason: RefreshReason = "unauthorized_recovery",
        *,
        stale: Credentials | None = None,
    ) -> Credentials:
        """Refresh the ChatGPT login (single-flight). After a 401, pass the credentials that got
        it as `stale`: when the tokens changed since, they are returned without a refresh."""
        tokens = self._doc.chatgpt_tokens if self._doc else None
        if tokens is None:
            raise RpcError(
                ErrorKind.UNAUTHENTICATED, "not logged in with ChatGPT: run codexctl login"
            )
        if stale is not None and stale.bearer != tokens.access_token:
            return self._chatgpt_credentials(tokens)
        return await self._refresh_shared(reason, tokens)

    # ------------------------------------------------------------------ the refresh

    async def _refresh_shared(self, reason: RefreshReason, seen: TokenSet) -> Credentials:
        while (flight := self._flight) is not None:
            await flight.done.wait()
            if flight.finished:
                return flight.outcome()
            # Its owner was cancelled before the issuer was called: take over.
        flight = self._flight = _Flight()
        try:
            result = await self._refresh_with_retries(reason, seen)
            flight.result = result
            return result
        except RpcError as exc:
            flight.error = _error_parts(exc)
            raise
        except Exception:
            flight.error = (
                ErrorKind.INTERNAL_ERROR,
                "refreshing the login failed unexpectedly (a codexd bug; see its log)",
                {},
            )
            raise
        finally:
            self._flight = None
            flight.done.set()

    async def _refresh_with_retries(self, reason: RefreshReason, seen: TokenSet) -> Credentials:
        failure: OAuthFailure | None = None
        with anyio.move_on_after(self._refresh_timeout_s):
            for attempt in range(len(self._retry_delays) + 1):
                if attempt:
                    await anyio.sleep(self._retry_delays[attempt - 1])
                outcome = await self._refresh_once(reason, seen)
                if isinstance(outcome, Credentials):
                    return outcome
                failure = outcome
                log.warning(
                    "refreshing the ChatGPT login failed (attempt %d): %s",
                    attempt + 1,
                    failure.message,
                )
        detail = failure.message if failure else "it took too long"
        raise RpcError(
            ErrorKind.UPSTREAM_ERROR,
            f"could not refresh the ChatGPT login ({detail}); you are still logged in, "
            "try again shortly",
            retryable=True,
            http_status=failure.status if failure else None,
        )

    async def _refresh_once(
        self, reason: RefreshReason, seen: TokenSet
    ) -> Credentials | OAuthFailure:
        async with self._state_lock:
            try:
                async with hold_auth_lock(self.codex_home, wait_s=self._lock_timeout_s):
                    return await self._refresh_locked(reason, seen)
            except LockTimeout as exc:
                return OAuthFailure(str(exc))
            except StoreError as exc:
                return OAuthFailure(str(exc))

    async def _refresh_locked(
        self, reason: RefreshReason, seen: TokenSet
    ) -> Credentials | OAuthFailure:
        disk = await self.store.load()
        disk_tokens = disk.chatgpt_tokens if disk else None
        if disk is None or disk_tokens is None:
            self._doc = disk
            raise RpcError(
                ErrorKind.UNAUTHENTICATED,
                "the ChatGPT login was removed by another program: run codexctl login",
            )
        if not same_tokens(disk_tokens, seen):
            # Another program refreshed (or logged in) since we read: adopt, don't spend.
            self._doc = disk
            if reason == "unauthorized_recovery" or not needs_refresh(
                disk_tokens, disk.last_refresh, self._clock()
            ):
                log.info("adopted tokens refreshed by another program")
                return self._chatgpt_credentials(disk_tokens)
            seen = disk_tokens
        if self._dead is not None and self._dead[0] == seen.refresh_token:
            kind, message, data = self._dead[1]
            raise RpcError(kind, message, **data)

        # From here the refresh token may be spent: the answer must be kept and written even
        # if the caller is cancelled, so this part is shielded (the HTTP timeout bounds it).
        with anyio.CancelScope(shield=True):
            outcome = await self._spend(reason, seen, disk)
        return outcome

    async def _spend(
        self, reason: RefreshReason, seen: TokenSet, disk: AuthDocument
    ) -> Credentials | OAuthFailure:
        self.refresh_count += 1
        result = await self._refresher(seen.refresh_token, reason)
        if isinstance(result, OAuthFailure):
            if result.permanent:
                err = RpcError(
                    ErrorKind.AUTH_EXPIRED,
                    result.message,
                    http_status=result.status,
                    upstream_code=result.code,
                )
                self._dead = (seen.refresh_token, _error_parts(err))
                log.error("the ChatGPT login cannot be refreshed: %s", result.message)
                raise err
            return result
        updated = disk.with_refreshed(
            id_token=result.id_token,
            access_token=result.access_token,
            refresh_token=result.refresh_token,
            now=datetime.fromtimestamp(self._clock(), UTC),
        )
        self._doc = updated
        try:
            await self.store.save(updated)
        except StoreError as exc:
            # The old refresh token is spent: keep the new ones in memory at least.
            log.error("refreshed the login but could not store it: %s", exc)
        log.info("refreshed the ChatGPT login (%s)", reason)
        tokens = updated.chatgpt_tokens
        assert tokens is not None
        return self._chatgpt_credentials(tokens)

    # ------------------------------------------------------------------ login and logout

    async def save_login(self, doc: AuthDocument) -> None:
        """Store a new login (under auth.lock) and use it at once."""
        async with self._state_lock, hold_auth_lock(self.codex_home, wait_s=self._lock_timeout_s):
            await self.store.save(doc)
            self._doc = doc
            self._dead = None

    async def logout(self, revoke: Callable[[TokenSet], Awaitable[bool]] | None = None) -> bool:
        """Revoke upstream when possible (best effort), then delete the stored login.

        Returns whether the issuer accepted the revocation.
        """
        revoked = False
        async with self._state_lock, hold_auth_lock(self.codex_home, wait_s=self._lock_timeout_s):
            try:
                doc = await self.store.load()
            except StoreError as exc:
                log.warning("cannot read the stored login before logging out: %s", exc)
                doc = self._doc
            tokens = doc.tokens if doc else None
            if tokens is not None and revoke is not None:
                try:
                    revoked = await revoke(tokens)
                except Exception as exc:  # best effort, as Codex: the delete must happen
                    log.warning("could not revoke the login upstream: %s", type(exc).__name__)
            await self.store.delete()
            self._doc = None
            self._dead = None
        return revoked

    # ------------------------------------------------------------------ account/read

    def account_info(self, provider: ProviderAuth = OPENAI) -> AccountInfo:
        choice = self._choose(provider)
        doc = self._doc
        last_refresh = format_time(doc.last_refresh) if doc and doc.last_refresh else None
        if isinstance(choice, TokenSet):
            id_claims = choice.id_claims
            access_claims = choice.access_claims
            return AccountInfo(
                mode="chatgpt",
                source=self._stored_source(),
                email=id_claims.email or access_claims.email,
                plan_type=id_claims.plan_type or access_claims.plan_type,
                account_id=choice.account_id or id_claims.account_id,
                expires_at=_rfc3339(access_claims.exp),
                last_refresh=last_refresh,
                store=self.store.name,
            )
        if isinstance(choice, Credentials) and choice.mode == "api_key":
            return AccountInfo(
                mode="api_key",
                source=choice.source,
                email=None,
                plan_type=None,
                account_id=None,
                expires_at=None,
                last_refresh=last_refresh if choice.source != "env" else None,
                store=self.store.name,
                key_hint=key_hint(choice.bearer.reveal()) if choice.bearer else None,
            )
        return AccountInfo(
            mode=None,
            source=None,
            email=None,
            plan_type=None,
            account_id=None,
            expires_at=None,
            last_refresh=None,
            store=self.store.name,
        )
