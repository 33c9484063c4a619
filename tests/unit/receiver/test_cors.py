"""CORS decisions for OTLP/HTTP (pure): origins with wildcards, headers, max age."""

from __future__ import annotations

from ingestd.config import CorsConfig
from ingestd.receiver.cors import Cors

PREFLIGHT = {"Access-Control-Request-Method": "POST"}


def test_off_without_origins() -> None:
    """No allowed_origins: CORS is off and no origin is allowed."""
    cors = Cors(CorsConfig())
    assert not cors.enabled
    assert cors.response_headers("https://a.example") == {}


def test_wildcard_matches_subdomains_only_where_written() -> None:
    """`https://*.example.com` allows its subdomains, not lookalikes."""
    cors = Cors(CorsConfig(allowed_origins=["https://*.example.com"]))
    assert cors.allows_origin("https://app.example.com")
    assert cors.allows_origin("HTTPS://App.Example.com")
    assert not cors.allows_origin("https://example.com.evil.net")
    assert not cors.allows_origin("http://app.example.com")


def test_star_allows_every_origin_and_header() -> None:
    """`*` alone allows any origin; allowed_headers `*` any header."""
    cors = Cors(CorsConfig(allowed_origins=["*"], allowed_headers=["*"]))
    headers = cors.preflight(
        {"Origin": "https://x.test", **PREFLIGHT, "Access-Control-Request-Headers": "x-a, x-b"}
    )
    assert headers["Access-Control-Allow-Origin"] == "https://x.test"
    assert headers["Access-Control-Allow-Headers"] == "x-a, x-b"
    assert "Access-Control-Max-Age" not in headers


def test_preflight_refuses_other_methods() -> None:
    """Only POST is allowed (OTLP/HTTP exports are POSTs)."""
    cors = Cors(CorsConfig(allowed_origins=["*"]))
    headers = cors.preflight({"Origin": "https://x.test", "Access-Control-Request-Method": "PUT"})
    assert "Access-Control-Allow-Origin" not in headers
