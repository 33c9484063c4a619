"""The storage contract (SQL migrations, Elasticsearch templates, the Prisma schema) as data.

Installed as the package `ingestd.schema_files` (setup.py maps it here), so `ingestd schema
apply` reads these files through importlib.resources from a wheel as from a checkout.
This file holds no code: it only makes the folder a regular package for editable installs.
"""
