"""Bearer-token authentication and the reload of tokens and limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from ingestd import config
from ingestd.appkeys import ApplicationKeys
from ingestd.auth import Authenticator, load_table
from ingestd.config import AuthConfig, TokenConfig
from ingestd.errors import ConfigError, Unauthenticated
from ingestd.reload import ConfigReloader
from ingestd.state.ratelimit import RateLimiter

TOKEN_A = "a-secret-token-for-acme"
TOKEN_B = "b-secret-token-for-bolt"


def auth(*tokens: TokenConfig, tokens_file: Path | None = None) -> Authenticator:
    return Authenticator(AuthConfig(enabled=True, tokens=list(tokens), tokens_file=tokens_file))


def test_token_maps_to_its_tenant() -> None:
    """A known bearer token yields its tenant; the scheme is case-insensitive."""
    authn = auth(TokenConfig(token=TOKEN_A, tenant="acme"))
    assert authn.authenticate(f"Bearer {TOKEN_A}") == "acme"
    assert authn.authenticate(f"bearer {TOKEN_A}".encode()) == "acme"


def test_token_sha256_matches_the_plain_token() -> None:
    """A config may hold only the token's SHA-256; the client still sends the token."""
    hashed = hashlib.sha256(TOKEN_B.encode()).hexdigest().upper()
    authn = auth(TokenConfig(token_sha256=hashed, tenant="bolt"))
    assert authn.authenticate(f"Bearer {TOKEN_B}") == "bolt"


@pytest.mark.parametrize(
    "header",
    [None, "", f"Basic {TOKEN_A}", "Bearer", "Bearer ", f"Bearer {TOKEN_A}x", TOKEN_A],
)
def test_missing_wrong_or_unknown_token_is_unauthenticated(header: str | None) -> None:
    """Missing header, other scheme, empty or unknown token: Unauthenticated."""
    authn = auth(TokenConfig(token=TOKEN_A, tenant="acme"))
    with pytest.raises(Unauthenticated):
        authn.authenticate(header)


def test_auth_off_ignores_the_header() -> None:
    """With auth disabled every request passes with no tenant."""
    authn = Authenticator(AuthConfig())
    assert authn.authenticate(None) == ""
    assert authn.authenticate("Bearer whatever") == ""


def test_tokens_file_adds_tokens(tmp_path: Path) -> None:
    """Tokens listed in tokens_file are accepted alongside the config's own."""
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": [{"token": TOKEN_B, "tenant": "bolt"}]}))
    authn = auth(TokenConfig(token=TOKEN_A, tenant="acme"), tokens_file=path)
    assert authn.authenticate(f"Bearer {TOKEN_B}") == "bolt"
    assert authn.authenticate(f"Bearer {TOKEN_A}") == "acme"


def test_one_token_for_two_tenants_is_a_config_error() -> None:
    """The same token may not name two tenants."""
    with pytest.raises(ConfigError, match="two tenants"):
        load_table(
            AuthConfig(
                enabled=True,
                tokens=[
                    TokenConfig(token=TOKEN_A, tenant="a"),
                    TokenConfig(token=TOKEN_A, tenant="b"),
                ],
            )
        )


def test_token_entry_needs_exactly_one_form() -> None:
    """token and token_sha256 together, or neither, is refused with its path."""
    text = "auth: {enabled: true, tokens: [{tenant: a}]}"
    with pytest.raises(ConfigError, match=r"auth\.tokens\[0\]: set exactly one"):
        config.parse(text, environ={})


def write_config(path: Path, tokens: list[dict[str, str]], items_per_s: float | None) -> None:
    limits = {"tenants": {"acme": {"items_per_s": items_per_s}}} if items_per_s else {}
    path.write_text(yaml.safe_dump({"auth": {"enabled": True, "tokens": tokens}, "limits": limits}))


def reloader_for(path: Path) -> tuple[ConfigReloader, Authenticator, RateLimiter]:
    cfg = config.load(path)
    authn = Authenticator(cfg.auth)
    limiter = RateLimiter(cfg.limits, None)
    return ConfigReloader(path, cfg, authn, limiter), authn, limiter


def test_reload_applies_new_tokens_and_limits(tmp_path: Path) -> None:
    """A changed file replaces tokens and limits; a removed token stops working."""
    path = tmp_path / "ingestd.yaml"
    write_config(path, [{"token": TOKEN_A, "tenant": "acme"}], None)
    reloader, authn, limiter = reloader_for(path)
    assert not limiter.active
    write_config(path, [{"token": TOKEN_B, "tenant": "bolt"}], 100)
    assert reloader.reload("test")
    assert authn.authenticate(f"Bearer {TOKEN_B}") == "bolt"
    with pytest.raises(Unauthenticated):
        authn.authenticate(f"Bearer {TOKEN_A}")
    assert limiter.active


def test_bad_reload_keeps_the_old_config(tmp_path: Path) -> None:
    """A file that does not validate changes nothing and reports failure."""
    path = tmp_path / "ingestd.yaml"
    write_config(path, [{"token": TOKEN_A, "tenant": "acme"}], None)
    reloader, authn, limiter = reloader_for(path)
    path.write_text(
        "auth: {enabled: true, tokens: [{token: short, tenant: x}]}\n"
        "limits: {default: {items_per_s: 5}}\n"
    )
    assert not reloader.reload("test")
    assert authn.authenticate(f"Bearer {TOKEN_A}") == "acme"
    assert not limiter.active


def test_file_change_is_noticed_by_check(tmp_path: Path) -> None:
    """check() reloads only when a watched file (config or tokens file) changed."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": TOKEN_A, "tenant": "acme"}]}))
    path = tmp_path / "ingestd.yaml"
    path.write_text(yaml.safe_dump({"auth": {"enabled": True, "tokens_file": str(tokens)}}))
    reloader, authn, _ = reloader_for(path)
    assert not reloader.check()
    tokens.write_text(yaml.safe_dump({"tokens": [{"token": TOKEN_B, "tenant": "bolt"}]}))
    assert reloader.check()
    assert authn.authenticate(f"Bearer {TOKEN_B}") == "bolt"
    assert not reloader.check()


def keys_reloader(path: Path, keys_on: bool) -> tuple[ConfigReloader, Authenticator]:
    """A reloader over an Authenticator that has an application key cache when *keys_on*."""
    cfg = config.load(path)
    db: dict[str, str] = {"d1": "app-1"}

    async def query(digests: list[str]) -> dict[str, str]:
        return {d: db[d] for d in digests if d in db}

    keys = (
        ApplicationKeys(cfg.auth.application_keys, "unused", None, query=query) if keys_on else None
    )
    authn = Authenticator(cfg.auth, keys=keys)
    return ConfigReloader(path, cfg, authn, RateLimiter(cfg.limits, None)), authn


def write_keys_config(path: Path, keys: dict[str, object]) -> None:
    tokens = [{"token": TOKEN_A, "tenant": "acme"}]
    auth_section = {"enabled": True, "tokens": tokens, "application_keys": keys}
    path.write_text(yaml.safe_dump({"auth": auth_section}))


def test_reload_applies_application_key_tuning(tmp_path: Path) -> None:
    """Changed refresh and TTL settings reach the running key cache, and are logged."""
    path = tmp_path / "ingestd.yaml"
    write_keys_config(path, {"enabled": True})
    reloader, authn = keys_reloader(path, keys_on=True)
    write_keys_config(path, {"enabled": True, "refresh_s": 7.0, "max_stale_s": 90.0})
    with capture_logs() as logs:
        assert reloader.reload("test")
    assert authn.keys is not None
    assert authn.keys.config.refresh_s == 7.0
    assert authn.keys.config.max_stale_s == 90.0
    (event,) = [e for e in logs if e["event"] == "config_reloaded"]
    assert "auth.application_keys: refresh_s=7.0, max_stale_s=90.0" in event["changes"]


@pytest.mark.parametrize(("before", "after"), [(True, False), (False, True)])
def test_reload_refuses_to_switch_application_keys(
    tmp_path: Path, before: bool, after: bool
) -> None:
    """Turning keys on or off is refused with one clear line; tokens and keys stay as they were."""
    path = tmp_path / "ingestd.yaml"
    write_keys_config(path, {"enabled": before})
    reloader, authn = keys_reloader(path, keys_on=before)
    keys = authn.keys
    path.write_text(
        yaml.safe_dump(
            {
                "auth": {
                    "enabled": True,
                    "tokens": [{"token": TOKEN_B, "tenant": "bolt"}],
                    "application_keys": {"enabled": after},
                }
            }
        )
    )
    with capture_logs() as logs:
        assert not reloader.reload("test")
    assert authn.keys is keys
    assert authn.authenticate(f"Bearer {TOKEN_A}") == "acme"
    (event,) = [e for e in logs if e["event"] == "config_reload_failed"]
    turn = "on" if after else "off"
    assert event["problems"] == [
        f"auth.application_keys.enabled: turning application keys {turn} takes a restart"
        " (the key cache starts with the daemon); nothing was reloaded"
    ]


def test_reload_with_auth_off_ignores_the_key_cache(tmp_path: Path) -> None:
    """With auth turned off no key is looked at, so a running cache does not block the reload."""
    path = tmp_path / "ingestd.yaml"
    write_keys_config(path, {"enabled": True})
    reloader, authn = keys_reloader(path, keys_on=True)
    path.write_text(yaml.safe_dump({"auth": {"enabled": False}}))
    assert reloader.reload("test")
    assert authn.authenticate(None) == ""
