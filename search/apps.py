from django.apps import AppConfig


def settings_problems() -> list[str]:
    from django.conf import settings

    from .hybrid_fusion import FusionRule

    if not settings.SEARCH_HYBRID_FUSION:
        return []
    try:
        FusionRule.parse(settings.SEARCH_HYBRID_FUSION)
    except ValueError as exc:
        return [f"SEARCH_HYBRID_FUSION: {exc}"]
    return []


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Search"

    def ready(self):
        from common.settings_checks import install

        install(settings_problems, self.label)
