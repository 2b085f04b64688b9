from django.contrib import admin
from django.urls import include, path

from . import metrics, views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("", include("api.urls")),
    path("", include("search.urls")),
    path("", include("relevance.urls")),
    path("", include("analytics.urls")),
]
