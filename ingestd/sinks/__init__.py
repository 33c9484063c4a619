"""Writers to the downstream stores: TimescaleDB (binary COPY) and Elasticsearch (bulk)."""
