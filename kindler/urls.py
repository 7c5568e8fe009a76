from django.contrib import admin
from django.urls import include, path

from kindler import views

urlpatterns = [
    path("api/health", views.health, name="health"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("clusters.urls")),
]
