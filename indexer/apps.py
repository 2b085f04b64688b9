from django.apps import AppConfig


class IndexerConfig(AppConfig):
    name = "indexer"
    verbose_name = "Collections and indexing"

    def ready(self):
        from . import signals  # noqa: F401  (connects the index clean-up on delete)
