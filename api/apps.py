from django.apps import AppConfig

# The API's limits (settings.py reads them; this app checks them).
LIMIT_SETTINGS = ("API_DOCUMENTS_MAX_BYTES", "API_DOCUMENTS_MAX_LINES", "API_RERANK_MAX_BYTES",
                  "API_RERANK_MAX_DOCUMENTS", "API_RERANK_MAX_CHARS")


def settings_problems() -> list[str]:
    from django.conf import settings

    return [f"{name} must be a whole number of at least 1, not {getattr(settings, name)!r}"
            for name in LIMIT_SETTINGS if not isinstance(getattr(settings, name), int) or getattr(settings, name) < 1]


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API keys"

    def ready(self):
        from common.settings_checks import install

        install(settings_problems, self.label)
