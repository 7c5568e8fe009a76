from django.contrib import admin
from django.urls import include, path

from kindler import views

urlpatterns = [
    path("api/health", views.health, name="health"),
    path("system/", views.system, name="system"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("clusters.urls")),
]

# Site-styled error pages; JSON with a "detail" under /api/.
handler400 = "clusters.errors.bad_request"
handler403 = "clusters.errors.permission_denied"
handler404 = "clusters.errors.page_not_found"
handler500 = "clusters.errors.server_error"
