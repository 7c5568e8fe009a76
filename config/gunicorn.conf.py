"""gunicorn settings for Kindler; every value can be overridden from the environment."""

import os

bind = os.environ.get("KINDLER_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("KINDLER_WORKERS", "2"))
# Threads let a worker keep answering while one request waits on a slow
# PostgreSQL; the failover budget keeps each wait short.
threads = int(os.environ.get("KINDLER_THREADS", "4"))
timeout = int(os.environ.get("KINDLER_WORKER_TIMEOUT", "30"))
graceful_timeout = 10
accesslog = os.environ.get("KINDLER_ACCESS_LOG", "-")
errorlog = "-"
wsgi_app = "kindler.wsgi:application"


def on_starting(server):
    """Have every worker write its metrics where /api/metrics adds them up."""
    from kindler import multiprocess

    multiprocess.prepare()


def child_exit(server, worker):
    from kindler import multiprocess

    multiprocess.worker_exited(worker.pid)
