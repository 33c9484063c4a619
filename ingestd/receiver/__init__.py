"""OTLP transports: gRPC and HTTP. Decode, map outcomes to statuses, hand over to ingest."""
