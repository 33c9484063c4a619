"""The database side of ingestd: what `ingestd schema apply | status | maintain` runs.

`apply` creates what the writers COPY into (numbered SQL in the top-level schema/postgres/,
chosen by tier) and sets the policies from the config; the maintenance steps (`maintenance.py`)
enforce them where TimescaleDB's own jobs cannot, once from `schema maintain` or on a schedule from
the daemon's stage in `ingestd.jobs`. `elasticsearch.py` does the same for the logs
data streams: their index templates, and their retention where Elasticsearch cannot enforce it.
"""
