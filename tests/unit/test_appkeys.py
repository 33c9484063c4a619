"""The application key cache: memory first, the database only for keys not seen recently,
unknown keys cached, never failing open; the per-application counts and their label cap."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from ingestd import appkeys
from ingestd.appkeys import ApplicationKeys, application_label, key_hash, new_token
from ingestd.auth import ANONYMOUS, Authenticator, Caller
from ingestd.config import ApplicationKeysConfig, AuthConfig, TokenConfig
from ingestd.errors import KeyCheckUnavailable, Unauthenticated

CONFIG = ApplicationKeysConfig(
    enabled=True, refresh_s=1.0, redis_ttl_s=5.0, unknown_ttl_s=10.0, max_stale_s=30.0
)


class FakeDatabase:
    """application_keys as a dict; counts queries; can be taken down."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.queries = 0
        self.down = False

    async def __call__(self, digests: list[str]) -> dict[str, str]:
        self.queries += 1
        if self.down:
            raise psycopg.OperationalError("connection refused")
        return {d: self.keys[d] for d in digests if d in self.keys}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(db: FakeDatabase, clock: Clock) -> ApplicationKeys:
    return ApplicationKeys(CONFIG, "unused", None, clock=clock, query=db)


def test_token_format_is_documented_one() -> None:
    """ik_ + 43 URL-safe characters; keyHash is the SHA-256 hex of the token's UTF-8."""
    token = new_token()
    assert token.startswith("ik_")
    assert len(token) == 46
    assert key_hash(token) == hashlib.sha256(token.encode()).hexdigest()
    assert new_token() != token


async def test_a_key_seen_recently_never_waits_on_the_database() -> None:
    """The first lookup asks the database; the next ones, for max_stale_s, do not."""
    clock, db = Clock(), FakeDatabase({"d1": "app-1"})
    keys = cache(db, clock)
    assert await keys.lookup("d1") == "app-1"
    clock.now += 29
    assert await keys.lookup("d1") == "app-1"
    assert db.queries == 1


async def test_unknown_keys_are_cached_as_unknown_briefly() -> None:
    """A random key costs one query, then none for unknown_ttl_s; then it is asked again."""
    clock, db = Clock(), FakeDatabase({})
    keys = cache(db, clock)
    for _ in range(5):
        assert await keys.lookup("random") is None
    assert db.queries == 1
    clock.now += 11
    db.keys["random"] = "app-2"  # created since: seen once the negative entry expired
    assert await keys.lookup("random") == "app-2"


async def test_never_fails_open() -> None:
    """A new key with the database down is refused retryably; a known key keeps working for
    max_stale_s while refreshes fail, then is refused too."""
    clock, db = Clock(), FakeDatabase({"known": "app-1"})
    keys = cache(db, clock)
    assert await keys.lookup("known") == "app-1"
    db.down = True
    with pytest.raises(KeyCheckUnavailable):
        await keys.lookup("new")
    clock.now += 20
    await keys.refresh()
    assert await keys.lookup("known") == "app-1"
    clock.now += 11  # 31 s since the last successful check
    with pytest.raises(KeyCheckUnavailable):
        await keys.lookup("known")
    db.down = False
    assert await keys.lookup("known") == "app-1"


async def test_refresh_sees_a_revocation() -> None:
    """After the key leaves the database, the next refresh makes it unknown."""
    clock, db = Clock(), FakeDatabase({"d1": "app-1"})
    keys = cache(db, clock)
    assert await keys.lookup("d1") == "app-1"
    del db.keys["d1"]
    clock.now += 1
    await keys.refresh()
    assert await keys.lookup("d1") is None
    assert keys.status()["unknown_cached"] == 1


async def test_authenticator_prefers_config_tokens_then_keys() -> None:
    """A configured token names its tenant; another token is an application key; else 401."""
    token = new_token()
    db = FakeDatabase({key_hash(token): "app-1"})
    authn = Authenticator(
        AuthConfig(
            enabled=True,
            tokens=[TokenConfig(token="a-secret-token-for-acme", tenant="acme")],
            application_keys=CONFIG,
        ),
        keys=cache(db, Clock()),
    )
    assert await authn.identify("Bearer a-secret-token-for-acme") == Caller("acme")
    assert await authn.identify(f"Bearer {token}") == Caller("app-1", "app-1")
    with pytest.raises(Unauthenticated):
        await authn.identify(f"Bearer {new_token()}")
    off = Authenticator(AuthConfig(enabled=False))
    assert await off.identify(f"Bearer {token}") is ANONYMOUS


def test_application_label_is_capped() -> None:
    """Registered ids label themselves up to the cap; then 'other'; no key is 'derived'."""
    seen = {(f"app-{i}", "traces") for i in range(appkeys.MAX_APPLICATION_LABELS)}
    assert application_label("", seen) == "derived"
    assert application_label("app-3", seen) == "app-3"
    assert application_label("app-new", seen) == "other"
    assert application_label("app-new", set()) == "app-new"


def test_counts_show_per_application_items_without_keys() -> None:
    """count() feeds /status by application and signal."""
    keys = cache(FakeDatabase({}), Clock())
    keys.count("app-1", "traces", 5)
    keys.count("app-1", "traces", 2)
    keys.count("", "logs", 1)
    assert keys.status()["accepted_items"] == {"app-1": {"traces": 7}, "derived": {"logs": 1}}
