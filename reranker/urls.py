from django.urls import path

from . import views

app_name = "reranker"
urlpatterns = [
    path("judgments/record", views.record_judgment, name="record_judgment"),
]
