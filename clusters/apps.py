from __future__ import annotations

from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "clusters"
    verbose_name = "Clusters"

    def ready(self) -> None:
        # Imported here, not at the top: clusters.metrics uses the models,
        # which cannot be imported before the app registry is ready.
        # Connects the receiver that counts failed sign-ins.
        from clusters import ratelimit  # noqa: F401
        from clusters.metrics import OperationsCollector
        from kindler import metrics

        metrics.register(OperationsCollector())
