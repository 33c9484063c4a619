"""What ingestd installs in its stores before writing: the database schema and the Elasticsearch
index templates (`ingestd schema apply`), and the maintenance that enforces their policies."""
