"""Secrets in DSNs and URLs are masked in every form libpq and redis accept (print-config)."""

from __future__ import annotations

import pytest
import yaml

from ingestd import config

SECRET = "s3cr3t-Pa55"

CASES = [
    f"postgresql://ingestd:{SECRET}@db:5432/deep_eyes",
    f"postgres://ingestd:{SECRET}@db1:5432,db2:5432/deep_eyes?sslmode=require",
    f"postgresql://ingestd@db/deep_eyes?password={SECRET}",
    f"postgresql://db/deep_eyes?user=x&password={SECRET}&sslmode=require",
    f"postgresql://db/deep_eyes?sslpassword={SECRET}",
    f"host=db user=ingestd password={SECRET} dbname=deep_eyes",
    f"host=db password = {SECRET} dbname=x",
    f"host=db password='{SECRET} with spaces' dbname=x",
    f"host=db password='{SECRET}\\'quoted' dbname=x",
    f"host=db PASSWORD={SECRET}",
    f"redis://:{SECRET}@redis:6379/0",
    f"redis://default:{SECRET}@redis:6379/0",
    f"rediss://user:{SECRET}@redis:6380/0",
    f"redis://redis:6379/0?password={SECRET}",
    f"unix:///run/redis.sock?password={SECRET}&db=0",
]


@pytest.mark.parametrize("dsn", CASES)
def test_print_config_masks_every_password_form(dsn: str) -> None:
    """No password form (userinfo, ?password=, keyword form with quoting) prints in clear."""
    text = yaml.safe_dump(
        {"sinks": {"timescale": {"dsn": dsn}}, "redis": {"url": dsn.replace("host=", "x=")}}
    )
    shown = yaml.safe_dump(config.redacted(config.parse(text, environ={})))
    assert SECRET not in shown
    assert "***" in shown


def test_masking_keeps_the_rest_of_the_dsn() -> None:
    """Host, user, database and other parameters stay readable."""
    cfg = config.parse(
        yaml.safe_dump(
            {
                "sinks": {
                    "timescale": {"dsn": f"host=db user=ingestd password='{SECRET} x' dbname=e"}
                },
                "redis": {"url": f"redis://:{SECRET}@redis:6379/0?password={SECRET}&db=1"},
            }
        ),
        environ={},
    )
    shown = config.redacted(cfg)
    assert shown["sinks"]["timescale"]["dsn"] == "host=db user=ingestd password=*** dbname=e"
    assert shown["redis"]["url"] == "redis://:***@redis:6379/0?password=***&db=1"
