from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("", include("api.urls")),
    path("", include("search.urls")),
    path("", include("relevance.urls")),
    path("", include("analytics.urls")),
]
