"""Kindler's database layer: PostgreSQL first, SQLite when it cannot be reached."""

POSTGRES = "postgres"
SQLITE = "sqlite"
ALIASES = (POSTGRES, SQLITE)
