from django.urls import path

from . import views

app_name = "analytics"
urlpatterns = [
    path("click", views.click, name="click"),
    path("api/clicks", views.api_click, name="api_clicks"),
]
