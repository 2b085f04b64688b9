from django.apps import AppConfig


def settings_problems() -> list[str]:
    from django.conf import settings

    from .ratelimit import parse_rate

    problems = []
    for name in ("SEARCH_RATE_LIMIT", "SEARCH_RATE_LIMIT_USER"):
        try:
            parse_rate(getattr(settings, name))
        except ValueError as exc:
            problems.append(f"{name} {exc}")
    return problems


class SearchsiteConfig(AppConfig):
    name = "searchsite"
    verbose_name = "Search site"

    def ready(self):
        from common.settings_checks import install

        install(settings_problems, self.label)

        from search import search_hooks

        from .metrics import record_search

        search_hooks.register(record_search)  # the stage-time histograms of /metrics
