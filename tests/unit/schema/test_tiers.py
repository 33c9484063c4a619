"""Tier choice: what the config asks, what was recorded, what the server offers."""

from __future__ import annotations

import pytest

from ingestd.errors import SchemaError
from ingestd.schema.tiers import ServerFacts, Tier, decide

NOTHING = ServerFacts(installed_version=None, available_version=None, license=None)
AVAILABLE = ServerFacts(installed_version=None, available_version="2.19.3", license=None)
APACHE = ServerFacts(installed_version="2.19.3", available_version="2.19.3", license="apache")
FULL = ServerFacts(installed_version="2.19.3", available_version="2.19.3", license="timescale")


@pytest.mark.parametrize(
    ("facts", "tier"), [(NOTHING, Tier.POSTGRES), (APACHE, Tier.APACHE), (FULL, Tier.FULL)]
)
def test_auto_follows_the_server(facts: ServerFacts, tier: Tier) -> None:
    """auto picks postgres without TimescaleDB, apache or full by timescaledb.license."""
    assert decide("auto", None, facts) is tier


@pytest.mark.parametrize("wanted", ["auto", "full", "apache"])
def test_extension_is_created_before_the_license_is_read(wanted: str) -> None:
    """An installable but absent extension means: create it, then decide (None)."""
    assert decide(wanted, None, AVAILABLE) is None


def test_forced_postgres_never_needs_the_extension() -> None:
    """tier postgres is chosen even where TimescaleDB could be created."""
    assert decide("postgres", None, AVAILABLE) is Tier.POSTGRES
    assert decide("postgres", None, FULL) is Tier.POSTGRES


def test_forced_apache_on_a_full_server_stays_apache() -> None:
    """A full server can host an apache-tier database (TSL features simply unused)."""
    assert decide("apache", None, FULL) is Tier.APACHE


def test_forced_full_without_the_tsl_license_is_refused() -> None:
    """tier full on an Apache-only server is an error that names the license."""
    with pytest.raises(SchemaError, match=r"timescaledb\.license is 'apache'"):
        decide("full", None, APACHE)


def test_forced_timescaledb_tier_without_the_extension_is_refused() -> None:
    """tier apache/full where TimescaleDB is not installable says so."""
    with pytest.raises(SchemaError, match="not available on this server"):
        decide("apache", None, NOTHING)


def test_recorded_tier_is_kept_under_auto() -> None:
    """A database set up as postgres stays postgres although TimescaleDB is now offered."""
    assert decide("auto", Tier.POSTGRES, FULL) is Tier.POSTGRES
    assert decide("auto", Tier.APACHE, FULL) is Tier.APACHE


def test_changing_a_recorded_tier_is_refused() -> None:
    """Asking another tier than the recorded one names both and refuses."""
    with pytest.raises(SchemaError, match=r"set up as tier postgres; schema\.tier is apache"):
        decide("apache", Tier.POSTGRES, APACHE)
