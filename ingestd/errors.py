"""The whole exception vocabulary of ingestd.

```
IngestdError
+-- ConfigError            every problem at once, each with a dotted path
+-- SchemaError            the database schema cannot be applied as asked (changed migration,
|                          tier mismatch, a failing migration)
+-- StageClosed            we closed it (shutdown race or bug)
+-- BadRequest             the request cannot be decoded or is not OTLP       permanent
|   +-- PayloadTooLarge    over a configured size limit                        permanent
|   +-- UnsupportedMedia   content type or encoding we do not speak            permanent
+-- Unauthenticated        missing or wrong bearer token                       permanent
+-- Unimplemented          a signal this process has no sink for               permanent
+-- Overloaded             full right now; client may retry                    retryable
|   +-- RateLimited        the tenant is over its ingest limit                 retryable
|   +-- InFlightElsewhere  the same request is being stored by another replica retryable
|   +-- MemoryPressure     memory over memory.* limits: refused before decoding retryable
|   +-- KeyCheckUnavailable an application key cannot be checked now (never   retryable
|                          failed open: Redis and the database both down)
+-- StateUnavailable       Redis did not answer; callers fail open, never sent to a client
+-- DeliveryError          a downstream write failed
    +-- SinkUnavailable    connection, 429/503, serialization failure          retryable
    +-- Rejected           the sink will never accept this data                permanent
```

Code branches on the class or on `retryable`, never on message text. The single table that
maps these to gRPC and HTTP statuses lives in `ingestd.receiver.status`.

What a client reads is `client_message`: ingestd's own refusals (they quote only the client's
own input) send their message; a `DeliveryError` carries a server's text (PostgreSQL,
Elasticsearch: hostnames, paths, other clients' values), so the client hears a fixed sentence
and the text stays in the logs, unless the raise site vouches for its text (`client_message=`).
"""

from __future__ import annotations

from collections.abc import Iterable


class IngestdError(Exception):
    """Base of every error ingestd raises on purpose."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        client_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self._client_message = client_message

    @property
    def client_message(self) -> str:
        """The text a client may read (see the module docstring)."""
        return self.message if self._client_message is None else self._client_message


class ConfigError(IngestdError):
    """The configuration is invalid; `problems` holds one line per problem, each with its path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))


class SchemaError(IngestdError):
    """`schema apply` refuses or fails: an applied migration file changed, the tier asked for
    is not the database's, or a migration failed (rolled back)."""


class StageClosed(IngestdError):
    """A stage was asked to consume after it stopped (a shutdown race)."""

    retryable = True


class BadRequest(IngestdError):
    """The request cannot be decoded, or is not a valid OTLP export request."""


class PayloadTooLarge(BadRequest):
    """The request body is over a configured limit, before or after decompression."""


class UnsupportedMedia(BadRequest):
    """A content type or content encoding ingestd does not speak."""


class Unauthenticated(IngestdError):
    """The bearer token is missing or unknown."""


class Unimplemented(IngestdError):
    """The request is for a signal whose sink is disabled in this process."""


class Overloaded(IngestdError):
    """A buffer is full right now; the client should retry after `retry_after_s`."""

    retryable = True


class RateLimited(Overloaded):
    """The tenant is over its configured ingest rate."""


class InFlightElsewhere(Overloaded):
    """An identical request is still being stored (by another replica); retry to learn how."""


class MemoryPressure(Overloaded):
    """The process holds too much memory (RSS or buffered bytes); refused before decoding."""


class KeyCheckUnavailable(Overloaded):
    """An application key not checked recently cannot be checked now (Redis and the database
    do not answer): refused, never let through unchecked."""


class StateUnavailable(IngestdError):
    """Shared state (Redis) did not answer in time, failed, or its breaker is open.

    Never reaches a client: every caller fails open (no dedup, local-only limits) and counts it.
    """

    retryable = True


class DeliveryError(IngestdError):
    """A write to a sink failed."""

    # The message holds the server's text: the client hears this instead.
    _generic = "the data could not be stored"

    @property
    def client_message(self) -> str:
        return self._generic if self._client_message is None else self._client_message


class SinkUnavailable(DeliveryError):
    """The sink cannot take data now (connection lost, 429/503, serialization failure)."""

    retryable = True
    _generic = "storage is unavailable right now; retry later"


class Rejected(DeliveryError):
    """The sink will never accept this data (mapping conflict, constraint violation)."""

    _generic = "the data was refused by storage (details are in ingestd's log)"
