"""Fail over: which database serves now, and surviving its loss. Never imports kindler.db.sync."""
