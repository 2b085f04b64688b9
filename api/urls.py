from django.urls import path

from . import views

urlpatterns = [
    path("api/collections", views.collections, name="api_collections"),
    path("api/collections/<slug:slug>/documents", views.post_documents, name="api_documents"),
    path("api/collections/<slug:slug>/documents/<path:document_id>", views.document, name="api_document"),
    path("api/rerank", views.rerank_view, name="api_rerank"),
]
