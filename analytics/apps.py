from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """Search analytics: every search and click logged, the admin's report, clicks as judgments."""

    name = "analytics"
    verbose_name = "Search analytics"

    def ready(self):
        # The query path tells this app of every search and lets it add click links to the page
        # (search/search_hooks.py, search/page_hooks.py); it never imports this app.
        from common.settings_checks import install
        from search import page_hooks, search_hooks

        from .search_log import add_click_links, check_settings, log_search

        install(check_settings, self.label)
        search_hooks.register(log_search)
        page_hooks.register(add_click_links)
