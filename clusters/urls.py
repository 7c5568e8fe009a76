from django.urls import path, re_path

from clusters import api, live, metrics, views

app_name = "clusters"

urlpatterns = [
    # The API first: its paths are matched most often, and in order.
    path("api/config", api.config, name="api-config"),
    path("api/metrics", metrics.metrics, name="api-metrics"),
    path("api/clusters", api.clusters, name="api-clusters"),
    path("api/clusters/<str:name>", api.cluster, name="api-cluster"),
    path("api/clusters/<str:name>/status", api.cluster_status, name="api-status"),
    path("api/clusters/<str:name>/start", api.start_cluster, name="api-start"),
    path("api/clusters/<str:name>/stop", api.stop_cluster, name="api-stop"),
    path("api/clusters/<str:name>/operations", api.operations, name="api-operations"),
    path("api/tasks/<str:task_id>", api.task_status, name="api-task"),
    path("", views.cluster_list, name="list"),
    path("new/", views.cluster_create, name="create"),
    path("live/", live.list_live, name="list-live"),
    path("clusters/<str:name>/", views.cluster_detail, name="detail"),
    path("clusters/<str:name>/live/", live.cluster_live, name="live"),
    path("clusters/<str:name>/edit/", views.cluster_edit, name="edit"),
    path("clusters/<str:name>/delete/", views.cluster_delete, name="delete"),
    path("clusters/<str:name>/start/", views.cluster_start, name="start"),
    path("clusters/<str:name>/stop/", views.cluster_stop, name="stop"),
    path(
        "clusters/<str:name>/operations/<uuid:uid>/",
        views.operation_fragment,
        name="operation",
    ),
    # Last: with DEBUG on, Django's own 404 page would be HTML.
    re_path(r"^api/(?P<path>.*)$", api.not_found),
]
