"""Prisma's `DATABASE_URL` as the default owner DSN, so one `.env` serves Deep Eyes and ingestd.

The owner DSN is the one `ingestd schema apply | status | maintain` and the maintenance stage
connect with (the role that owns the tables). Its value, in order: `sinks.timescale.owner_dsn`
when set; else `sinks.timescale.dsn` when the config file sets it; else `DATABASE_URL`
converted by `libpq_dsn`; else the built-in default. The writers always use
`sinks.timescale.dsn` (with `owner_dsn` set: a member of the least-privilege ingest role,
docs/security.md).

Prisma accepts query parameters that libpq refuses with `invalid URI query parameter`
(`schema`, `connection_limit`, `pool_timeout`, `pgbouncer`, `sslaccept`, ...): every
parameter libpq does not know is dropped. ingestd's tables live in `public` whatever
`schema=` says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from psycopg import pq

from ingestd.config import TimescaleSinkConfig

ENV = "DATABASE_URL"
_SCHEMES = ("postgresql", "postgres")


@cache
def libpq_keywords() -> frozenset[str]:
    """The connection parameters this libpq knows (sslmode, connect_timeout, ...)."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def libpq_dsn(url: str) -> tuple[str, list[str]]:
    """*url* without the query parameters libpq does not know; and the dropped names.

    Raises ValueError for anything but a postgresql:// or postgres:// URL.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"{ENV} must be a postgresql:// URL, not {parts.scheme or 'a bare string'}://..."
        )
    known: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        (known if name in libpq_keywords() else dropped).append((name, value))
    query = urlencode(known, safe="/:")
    return urlunsplit(parts._replace(query=query)), [name for name, _ in dropped]


def owner_dsn(timescale: TimescaleSinkConfig, environ: Mapping[str, str] | None = None) -> str:
    """The DSN schema commands connect with (see the module docstring for the order)."""
    if timescale.owner_dsn is not None:
        return timescale.owner_dsn
    env = os.environ if environ is None else environ
    if "dsn" in timescale.model_fields_set or not env.get(ENV):
        return timescale.dsn
    return libpq_dsn(env[ENV])[0]
