"""Each app checks its own settings: as a Django system check (`manage.py check`, and every
command that runs checks) and when Django starts, so that a web or worker process with a bad value
stops at once with the message instead of failing on its first request.

The settings module only reads values; the lists of accepted names live with the code that uses
them, and the app that owns that code checks them here.
"""
from __future__ import annotations

from collections.abc import Callable

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

SettingsCheck = Callable[[], list[str]]


def install(check: SettingsCheck, app_label: str) -> None:
    """Registers `check` (it returns one message per bad setting) and stops the start if any."""

    def system_check(app_configs=None, **kwargs):
        return [checks.Error(message, id=f"{app_label}.E{number:03d}")
                for number, message in enumerate(check(), start=1)]

    checks.register(system_check, "settings")
    problems = check()
    if problems:
        raise ImproperlyConfigured("; ".join(problems))
