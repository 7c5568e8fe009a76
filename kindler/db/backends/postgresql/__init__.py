"""Django's PostgreSQL backend with a bounded per-process pool (kindler.db.pool)."""
