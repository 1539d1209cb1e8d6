"""The store: schema and migrations (``database``), the TimescaleDB plan, and the queries of each aggregate."""
