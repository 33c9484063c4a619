"""Pure OTLP -> rows (traces, metrics) and -> documents (logs). No I/O."""
