"""Self-observation: admin server, health and prober, metrics, process sampler, logging."""
