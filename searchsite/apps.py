from django.apps import AppConfig


class SearchsiteConfig(AppConfig):
    name = "searchsite"
    verbose_name = "Search site"
