"""The fault-injection suite: steady OTLP load, one fault at a time, an exactly-once verdict.

`python -m tests.chaos` (or `make chaos`) runs every fault in `faults.FAULTS` against a real
`ingestd run` process and the dev stack; tests/integration/test_chaos_short.py runs a reduced
set inside `make test`. See docs/reports/reliability-2026-11-26.md for what the faults showed.
"""
