"""The database side of ingestd: `ingestd schema apply | status | maintain` and the maintenance job.

`apply` creates what the writers COPY into (numbered SQL in the top-level schema/postgres/,
chosen by tier) and sets the policies from the config; the maintenance job (a stage of the daemon)
enforces them where TimescaleDB's own jobs cannot. `elasticsearch.py` does the same for the logs
data streams: their index templates, and their retention where Elasticsearch cannot enforce it.
"""
