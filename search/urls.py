from django.urls import path

from . import views

urlpatterns = [
    path("", views.search_page, name="search"),
    path("api/search", views.api_search, name="api_search"),
    path("documents/<int:document_id>", views.document_page, name="document"),
]
