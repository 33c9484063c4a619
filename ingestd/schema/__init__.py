"""The database side of ingestd: `ingestd schema apply | status | maintain` and the maintenance job.

`apply` creates what the writers COPY into (numbered SQL in ingestd/schema/postgres/, chosen by
tier) and sets the policies from the config; the maintenance job (a stage of the daemon)
enforces them where TimescaleDB's own jobs cannot.
"""
