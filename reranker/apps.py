from django.apps import AppConfig


def settings_problems() -> list[str]:
    from django.conf import settings

    from common.precision import PRECISIONS
    from .scorers import RUNTIMES

    problems = []
    if settings.RERANKER_PRECISION not in PRECISIONS:
        problems.append(f"RERANKER_PRECISION must be one of {', '.join(PRECISIONS)}, "
                        f"not {settings.RERANKER_PRECISION!r}")
    if settings.RERANKER_RUNTIME in ("onnx", "onnx-int8"):
        problems.append("RERANKER_RUNTIME: the CPU runtime is OpenVINO now; use openvino or openvino-int8 "
                        f"instead of {settings.RERANKER_RUNTIME!r}")
    elif settings.RERANKER_RUNTIME not in RUNTIMES:
        problems.append(f"RERANKER_RUNTIME must be one of {', '.join(RUNTIMES)}, not {settings.RERANKER_RUNTIME!r}")
    return problems


class RerankerConfig(AppConfig):
    name = "reranker"
    verbose_name = "Reranking"

    def ready(self):
        from common.settings_checks import install

        install(settings_problems, self.label)
