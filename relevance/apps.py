from django.apps import AppConfig


class RelevanceConfig(AppConfig):
    """Judgments, evaluation and training runs: the relevance work built on top of the query path."""

    name = "relevance"
    verbose_name = "Relevance"

    def ready(self):
        from common.settings_checks import install

        from .auto_reranker import check_settings

        install(check_settings, self.label)

        # The search page shows staff the grade each result already has (search/page_hooks.py).
        from search import page_hooks

        from .search_page import add_grades

        page_hooks.register(add_grades)

        # A collection's first build going live may start its reranker's training (indexer/builds.py).
        from indexer.builds import build_live

        from .auto_reranker import after_build

        build_live.connect(after_build, dispatch_uid="relevance.auto_reranker")
