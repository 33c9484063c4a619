"""Alert rules evaluated on what ingestd stored, written to the `alerts` table, notified.

config.py (the `alerts` section) -> queries.py (one rule's samples from PostgreSQL or
Elasticsearch) -> state.py (pending / firing per series, pure) -> store.py (one transaction per
evaluation: state, `alerts` rows, outbox) -> notify.py (the outbox to webhooks or Alertmanager);
stage.py runs it all on the replica holding the advisory lock. See docs/alerts.md.
"""
