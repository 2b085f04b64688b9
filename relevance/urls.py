from django.urls import path

from . import views

app_name = "relevance"
urlpatterns = [
    path("judgments/record", views.record_judgment, name="record_judgment"),
]
