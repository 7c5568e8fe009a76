"""The original web UI backend as bench/api.py runs it: its app, with no host script.

Imported by uvicorn in the original's own virtual environment (see
bench/api.py). The original's create and delete schedule
`DebouncedReconciler._run_reconcile`, which runs a script on the host five
seconds later; here that one coroutine does nothing. The request path,
scheduling included, is the original's own.
"""

from __future__ import annotations

from app.services import reconcile_service


async def _no_reconcile(self: object) -> None:
    """Do nothing where the original would run scripts/reconcile.sh on the host."""


reconcile_service.DebouncedReconciler._run_reconcile = _no_reconcile  # type: ignore[method-assign]

from app.main import app  # noqa: E402

__all__ = ["app"]
