"""Rebuild a collection's index without downtime, through the `embed` workers.

    python manage.py rebuild_index <collection-slug> [--model ID] [--index-options int8_hnsw] [--language en]

The alias keeps serving the previous index until the new one is complete and checked; then it
swaps atomically. Needs a running `embed` worker (`make run` starts one).
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from common.progress import progress

from indexer.analysis import UnknownLanguage, check_language
from indexer.builds import BuildInProgress
from indexer.embedding import UnloadableModel, check_model_id
from indexer.models import Collection, IndexBuild
from indexer.store import get_store
from indexer.tasks import start_build


class Command(BaseCommand):
    help = "Build a new index for a collection (optionally with another model) and swap the alias to it."

    def add_arguments(self, parser):
        parser.add_argument("collection", help="collection slug")
        parser.add_argument("--model", help="embedding model id or directory (default: the collection's)")
        parser.add_argument("--index-options", choices=get_store().index_option_types,
                            help="HNSW vector storage, of those the engine offers (default: the collection's)")
        parser.add_argument("--language", help="keyword language of the new index: en, zh or none (default: the "
                                                 "collection's); the collection records it when the alias swaps")
        parser.add_argument("--no-wait", action="store_true", help="start the build and return")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress updates")

    def handle(self, *args, collection, model=None, index_options=None, language=None, no_wait=False, poll=1.0,
               **options):
        try:
            coll = Collection.objects.get(slug=collection)
        except Collection.DoesNotExist:
            raise CommandError(f"no collection with slug {collection!r}") from None
        if language is not None:
            try:
                check_language(language)
            except UnknownLanguage as exc:
                raise CommandError(str(exc)) from None
        if model:
            try:
                check_model_id(model)
            except UnloadableModel as exc:
                raise CommandError(str(exc)) from None
        try:
            build = start_build(coll, model_id=model, index_options=index_options, language=language,
                                requested_by="rebuild_index")
        except BuildInProgress as exc:
            raise CommandError(f"{collection}: a build is already in progress ({exc.build}); "
                               "wait for it or see it in the admin") from None
        except ValueError as exc:  # the collection's index options are not the engine's (bbq_hnsw on OpenSearch)
            raise CommandError(f"{collection}: {exc}") from None
        self.stdout.write(f"build {build.index_name}: {build.total_documents} documents, model "
                          f"{build.model_id}, {build.index_options}, language {build.language}")
        if no_wait:
            return
        with progress(total=build.total_documents, unit="doc", desc=collection) as bar:
            while build.in_progress:
                time.sleep(poll)
                build.refresh_from_db()
                bar.total = build.total_documents
                bar.n = build.done_documents + build.failed_documents
                bar.set_postfix(chunks=build.done_chunks, failed=build.failed_documents, status=build.status)
        if build.status != IndexBuild.Status.LIVE:
            raise CommandError(f"build {build.index_name} {build.status}: {build.error}")
        rate = build.chunks_per_second or 0
        self.stdout.write(self.style.SUCCESS(
            f"{collection} now serves {build.index_name}: {build.done_documents} documents, "
            f"{build.done_chunks} chunks in {build.elapsed_seconds:.1f}s ({rate:.1f} chunks/s)"
        ))
