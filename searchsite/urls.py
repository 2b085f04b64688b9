from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("", views.search_page, name="search"),
    path("api/search", views.api_search, name="api_search"),
    path("", include("reranker.urls")),
]
