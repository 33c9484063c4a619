"""State shared by every replica (dedup, pressure, rate limits), kept in Redis."""
