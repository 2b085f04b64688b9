from django.apps import AppConfig


def settings_problems() -> list[str]:
    from django.conf import settings

    from .encoders import RUNTIMES

    problems = []
    if settings.EMBEDDING_RUNTIME not in RUNTIMES:
        problems.append(f"EMBEDDING_RUNTIME must be one of {', '.join(RUNTIMES)}, not {settings.EMBEDDING_RUNTIME!r}")
    if settings.EMBEDDING_THREADS < 0:
        problems.append(f"EMBEDDING_THREADS must be 0 or more, not {settings.EMBEDDING_THREADS}")
    return problems


class IndexerConfig(AppConfig):
    name = "indexer"
    verbose_name = "Collections and indexing"

    def ready(self):
        from common.settings_checks import install

        from . import signals  # noqa: F401  (connects the index clean-up on delete)

        install(settings_problems, self.label)
