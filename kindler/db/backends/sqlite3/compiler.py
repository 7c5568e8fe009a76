"""Django's SQL compilers for SQLite; one-row INSERTs are built once.

See kindler.db.backends.inserts.
"""

from __future__ import annotations

from django.db.models.sql.compiler import (
    SQLAggregateCompiler,
    SQLCompiler,
    SQLDeleteCompiler,
    SQLUpdateCompiler,
)

from kindler.db.backends.inserts import ReusedInsertCompiler as SQLInsertCompiler

__all__ = [
    "SQLAggregateCompiler",
    "SQLCompiler",
    "SQLDeleteCompiler",
    "SQLInsertCompiler",
    "SQLUpdateCompiler",
]
