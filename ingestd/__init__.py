"""ingestd: an OTLP ingest daemon. Traces and metrics into TimescaleDB, logs into Elasticsearch."""

__version__ = "0.1.0"
