"""Structured logging setup: JSON lines in a container, readable text on a terminal.

Self-metrics (Prometheus) are declared in `ingestd.observe.metrics`; health lives in
`ingestd.observe.health`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from ingestd.config import TelemetryConfig


def setup_logging(config: TelemetryConfig, **static: Any) -> None:
    """JSON lines in a container, readable colours on a terminal; stdlib logs go the same way.

    *static* fields go into every event (a worker's `worker=<index>`).
    """
    level = getattr(logging, config.log_level.upper())
    as_json = config.log_format == "json" or (
        config.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if static:
        shared.append(_Static(static))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write() per event (print() makes two): workers share the supervisor's stderr, and
        # writes up to PIPE_BUF (4 KiB) to a pipe are never interleaved with another process's.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (grpc, elastic_transport, aiohttp) log through the stdlib; route them here too.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


class _Static:
    """A processor that adds the same fields to every event."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        for key, value in self._fields.items():
            event.setdefault(key, value)
        return event
