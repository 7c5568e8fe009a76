from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from kindler import views

urlpatterns = [
    path("api/health", views.health, name="health"),
    path("system/", views.system, name="system"),
    path("admin/", admin.site.urls),
    # Sign-in and password change only: Kindler sends no mail, so the
    # password-reset pages of django.contrib.auth.urls would promise one.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/auth-check", views.auth_check, name="auth-check"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password_change/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("", include("clusters.urls")),
]

# Site-styled error pages; JSON with a "detail" under /api/.
handler400 = "clusters.errors.bad_request"
handler403 = "clusters.errors.permission_denied"
handler404 = "clusters.errors.page_not_found"
handler500 = "clusters.errors.server_error"
