from django.apps import AppConfig


class RerankerConfig(AppConfig):
    name = "reranker"
    verbose_name = "Reranking"
