"""CORS for OTLP/HTTP: browser SDKs send a preflight `OPTIONS` before each cross-origin POST.

Pure decisions over header values (the receiver does the I/O), after the Fetch standard and
the Collector's `cors` settings (rs/cors): an allowed origin is echoed in
`Access-Control-Allow-Origin` with `Vary: Origin`; a preflight is answered 204, with the
allow headers only when the origin, the method (POST) and every requested header are allowed,
so that the browser blocks the rest. Requests without `Origin` are not CORS at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ingestd.config import CorsConfig

# Request headers every CORS configuration allows (the Collector's implicit list).
_ALWAYS_ALLOWED = frozenset({"accept", "accept-language", "content-type", "content-language"})


class Cors:
    """The `receivers.http.cors` rules, compiled."""

    def __init__(self, config: CorsConfig) -> None:
        self.enabled = bool(config.allowed_origins)
        self._any_origin = "*" in config.allowed_origins
        self._origins = [
            re.compile(
                "^" + ".*".join(re.escape(p) for p in pattern.lower().split("*")) + "$",
                re.DOTALL,
            )
            for pattern in config.allowed_origins
        ]
        headers = {h.strip().lower() for h in config.allowed_headers}
        self._any_header = "*" in headers
        self._headers = _ALWAYS_ALLOWED | headers
        self._max_age = config.max_age

    def allows_origin(self, origin: str) -> bool:
        if not self.enabled:
            return False
        if self._any_origin:
            return True
        origin = origin.lower()
        return any(p.match(origin) for p in self._origins)

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers to add to an actual (non-preflight) response for a request from *origin*."""
        if origin is None or not self.allows_origin(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def preflight(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers of the 204 answering a preflight; only `Vary` when it is not allowed."""
        refused = {"Vary": "Origin"}
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method", "")
        if origin is None or not self.allows_origin(origin) or method.upper() != "POST":
            return refused
        requested = [
            h.strip().lower()
            for h in headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        if not self._any_header and any(h not in self._headers for h in requested):
            return refused
        allowed = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Vary": "Origin",
        }
        if requested:
            allowed["Access-Control-Allow-Headers"] = ", ".join(requested)
        if self._max_age:
            allowed["Access-Control-Max-Age"] = str(self._max_age)
        return allowed

    @staticmethod
    def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
        return (
            method == "OPTIONS"
            and "Origin" in headers
            and "Access-Control-Request-Method" in headers
        )
