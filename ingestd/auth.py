"""Optional bearer-token authentication, called by both receivers before the body is read.

Tokens (or their SHA-256, so that a config file need hold no secret) map to tenants, from
`auth.tokens` and the file `auth.tokens_file` names; both are re-read on reload
(`ingestd.reload`). A receiver calls, before decoding anything:

    tenant = authenticator.authenticate(value_of_the_authorization_header_or_None)

gRPC: the `authorization` metadata value (`context.invocation_metadata()`); HTTP: the
`Authorization` header. It raises `Unauthenticated` (UNAUTHENTICATED / 401 through the status
table) when the header is missing, not a bearer token, or unknown; the tenant it returns goes
into `RequestContext(transport, tenant)` and `request_key(signal, tenant, body)`. With auth
off it returns "" without looking at the header.

With `auth.application_keys` on, receivers call the async `identify` instead: a token that
is no configured token is looked up as a registered application's ingest key
(`ingestd.appkeys`), and the caller is that application (its id is the tenant too, so rate
limits are keyed by it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingestd.config import AuthConfig, TokenConfig
from ingestd.errors import ConfigError, Unauthenticated
from ingestd.observe.metrics import AUTH_FAILURES

if TYPE_CHECKING:
    from ingestd.appkeys import ApplicationKeys

log = structlog.get_logger("ingestd.auth")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the tenant its limits are charged to, and the registered
    application whose key it carried ("" when it carried none)."""

    tenant: str
    application_id: str = ""


ANONYMOUS = Caller("")

# sha256(token) as hex -> tenant. Looking up a digest leaks nothing useful about the token:
# an attacker would need a preimage of a digest to make use of any timing difference.
TokenTable = dict[str, str]


class _TokensFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    tokens: list[TokenConfig] = Field(default_factory=list)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_table(config: AuthConfig) -> TokenTable:
    """Every token of *config* and its tokens file; ConfigError naming each problem."""
    entries = list(config.tokens)
    if config.tokens_file is not None:
        entries += _read_tokens_file(config.tokens_file)
    table: TokenTable = {}
    problems: list[str] = []
    for i, entry in enumerate(entries):
        key = (entry.token_sha256 or "").lower() or digest(entry.token or "")
        if table.get(key, entry.tenant) != entry.tenant:
            problems.append(f"auth.tokens[{i}]: the same token maps to two tenants")
        table[key] = entry.tenant
    if config.enabled and not table and not config.application_keys.enabled:
        problems.append("auth: enabled, but no tokens are configured")
    if problems:
        raise ConfigError(problems)
    return table


def _read_tokens_file(path: Path) -> list[TokenConfig]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([f"auth.tokens_file: cannot read {path}: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"auth.tokens_file: {path} is not valid YAML: {exc}"]) from exc
    try:
        return list(_TokensFile.model_validate(raw).tokens)
    except ValidationError as exc:
        raise ConfigError(
            f"auth.tokens_file ({path}): {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ) from exc


class Authenticator:
    """Maps a request's Authorization value to its tenant; swapped whole on reload."""

    name = "auth"

    def __init__(
        self,
        config: AuthConfig,
        table: TokenTable | None = None,
        keys: ApplicationKeys | None = None,
    ) -> None:
        """Raises ConfigError when the tokens (file) are unusable. *keys*: the application
        key cache, when `auth.application_keys` is on."""
        self.enabled = config.enabled
        self._table = load_table(config) if table is None else table
        self.keys = keys

    def authenticate(self, authorization: str | bytes | None) -> str:
        """The tenant of a request with this Authorization value; "" when auth is off.

        Raises Unauthenticated: missing header, another scheme than Bearer, unknown token.
        """
        if not self.enabled:
            return ""
        tenant = self._table.get(digest(self._bearer(authorization)))
        if tenant is None:
            AUTH_FAILURES.labels(reason="unknown").inc()
            raise Unauthenticated("unknown bearer token")
        return tenant

    async def identify(self, authorization: str | bytes | None) -> Caller:
        """The caller of a request with this Authorization value; ANONYMOUS when auth is off.

        A configured token names its tenant; any other token must be a registered
        application's key. Raises Unauthenticated (missing, not Bearer, unknown or revoked)
        or KeyCheckUnavailable (a key not seen recently that cannot be checked now).
        """
        if not self.enabled:
            return ANONYMOUS
        hashed = digest(self._bearer(authorization))
        tenant = self._table.get(hashed)
        if tenant is not None:
            return Caller(tenant)
        if self.keys is not None:
            application = await self.keys.lookup(hashed)
            if application is not None:
                return Caller(application, application)
        AUTH_FAILURES.labels(reason="unknown").inc()
        raise Unauthenticated("unknown bearer token")

    def _bearer(self, authorization: str | bytes | None) -> str:
        """The token of a `Bearer <token>` value; Unauthenticated otherwise."""
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        if not authorization:
            AUTH_FAILURES.labels(reason="missing").inc()
            raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            AUTH_FAILURES.labels(reason="scheme").inc()
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return token.strip()

    def update(self, config: AuthConfig, table: TokenTable) -> list[str]:
        """Use *config* and its loaded *table* from now on; describe what changed (no secrets)."""
        changes: list[str] = []
        if config.enabled != self.enabled:
            changes.append(f"auth {'enabled' if config.enabled else 'disabled'}")
        added = len(table.keys() - self._table.keys())
        removed = len(self._table.keys() - table.keys())
        moved = sum(1 for k in table.keys() & self._table.keys() if table[k] != self._table[k])
        if added or removed or moved:
            changes.append(f"tokens: {added} added, {removed} removed, {moved} moved tenant")
        gone = set(self._table.values()) - set(table.values())
        if gone:
            changes.append(f"tenants without tokens now: {', '.join(sorted(gone))}")
        self.enabled, self._table = config.enabled, table
        return changes

    @property
    def tenants(self) -> set[str]:
        return set(self._table.values())
