"""The dev stack's real servers answer, and report the versions the README promises."""

from __future__ import annotations

import psycopg
import redis
from elasticsearch import Elasticsearch

from tests.integration.conftest import Stack


def test_timescaledb_extension_and_license(database: str) -> None:
    """TimescaleDB can be created in a fresh database; its version and licence are readable."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        (version,) = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone() or (None,)
        (license_,) = conn.execute("SHOW timescaledb.license").fetchone() or (None,)
        (server,) = conn.execute("SHOW server_version").fetchone() or (None,)
    assert str(version).startswith("2.")
    assert license_ in ("apache", "timescale")
    assert str(server).startswith("15.")


def test_elasticsearch_answers_the_official_client(es: Elasticsearch) -> None:
    """The official client reads the node version and a green or yellow cluster health."""
    nodes = es.nodes.info(node_id="_local", filter_path="nodes.*.version")
    (version,) = [node["version"] for node in nodes["nodes"].values()]
    assert version.startswith("8.")
    assert es.cluster.health()["status"] in ("green", "yellow")


def test_redis_answers_ping(redis_client: redis.Redis, stack: Stack) -> None:
    """Redis answers PING and reports a server version."""
    assert redis_client.ping() is True
    assert str(redis_client.info("server")["redis_version"]).split(".")[0] >= "6"
