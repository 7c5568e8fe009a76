"""Django's SQLite backend, dropping connections that found the file read-only."""
