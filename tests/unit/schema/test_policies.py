"""Policies derived from the config, per tier."""

from __future__ import annotations

from datetime import timedelta

from ingestd import config
from ingestd.schema.policies import refresh_policies, table_policies
from ingestd.schema.tiers import Tier

DEFAULTS = config.parse("", environ={}).schema


def test_defaults_are_the_documents_values() -> None:
    """365/30 days retention, compression after 30/7 days (full tier), 15 min ledger."""
    by_table = {p.qualified: p for p in table_policies(DEFAULTS, Tier.FULL)}
    assert by_table["metrics"].drop_after == timedelta(days=365)
    assert by_table["traces"].drop_after == timedelta(days=30)
    assert by_table["metrics"].compress_after == timedelta(days=30)
    assert by_table["traces"].compress_after == timedelta(days=7)
    assert by_table["ingestd.ledger"].drop_after == timedelta(minutes=15)
    assert by_table["traces"].time_column == "starttime"


def test_who_enforces_depends_on_the_tier() -> None:
    """TimescaleDB jobs on full; ingestd elsewhere; the ledger is always ingestd's."""
    full = {p.qualified: p.enforced_by for p in table_policies(DEFAULTS, Tier.FULL)}
    assert full["metrics"] == "timescaledb"
    assert full["ingestd.ledger"] == "ingestd"
    for tier in (Tier.APACHE, Tier.POSTGRES):
        assert {p.enforced_by for p in table_policies(DEFAULTS, tier)} == {"ingestd"}


def test_compression_and_partitions_only_where_they_exist() -> None:
    """compress_after only on full; partitions_ahead only on postgres."""
    for tier in Tier:
        metrics = table_policies(DEFAULTS, tier)[0]
        assert (metrics.compress_after is not None) == (tier is Tier.FULL)
        assert (metrics.partitions_ahead is not None) == (tier is Tier.POSTGRES)


def test_cagg_windows_cover_the_late_window_and_two_buckets() -> None:
    """Hourly starts one bucket beyond the late window; daily spans at least two days."""
    cfg = config.parse("schema: {rollups: {late_window_hours: 30}}", environ={}).schema
    hourly, daily = refresh_policies(cfg)
    assert hourly.start_offset == timedelta(hours=31)
    assert hourly.end_offset == timedelta(0)
    assert daily.start_offset == timedelta(days=3)
    assert refresh_policies(DEFAULTS)[1].start_offset == timedelta(days=2)
