"""python manage.py import_corpus <collection-slug> <path> [--create [--language en|zh|none]
    [--visibility public|authenticated|groups] [--group NAME ...]] [--format beir|jsonl|csv|files]

Upserts documents by external id (indexer/importing.py), prints a summary and the number of
chunks the changed documents make at the collection's chunk settings, and exits non-zero when
anything was rejected.
"""
from __future__ import annotations

import time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import OperationalError, transaction

from indexer.analysis import LANGUAGES, UnknownLanguage, check_language
from indexer.importing import (FORMATS, ImportBusy, ImportOptions, collection_access, collection_chunker,
                               describe_access, detect_format, import_sources, is_lock_timeout, sources_from_path)
from indexer.models import Collection, Document, default_embedding_model
from common.progress import progress

# Rejections listed one by one in the summary; the rest are counted.
MAX_LISTED_REJECTIONS = 50


class Command(BaseCommand):
    help = ("Import a BEIR folder (corpus.jsonl), a JSONL file, a CSV file or a folder of "
            ".txt/.md/.html/.pdf files into a collection, creating or updating documents by external id.")

    def add_arguments(self, parser):
        parser.add_argument("slug", help="slug of the collection")
        parser.add_argument("path", type=Path, help="BEIR folder, .jsonl file, .csv file, or folder of documents")
        parser.add_argument("--create", action="store_true",
                            help="create the collection (with default settings) if it does not exist")
        parser.add_argument("--name", help="name of a collection created with --create (default: the slug)")
        parser.add_argument("--language", help="keyword language of a collection created with --create: "
                                               f"{', '.join(LANGUAGES)} (default en); an existing collection "
                                               "must already have it (change it with rebuild_index --language)")
        parser.add_argument("--visibility", choices=Collection.Visibility.values,
                            help="who may search a collection created with --create: public (anyone), "
                                 "authenticated (signed-in users) or groups (members of the --group groups; "
                                 "with none, superusers only); default: the DEFAULT_COLLECTION_VISIBILITY "
                                 "setting, or groups when --group is given")
        parser.add_argument("--group", action="append", dest="groups", metavar="NAME",
                            help="an existing group whose members may search a collection created with "
                                 "--create (repeat for several); implies --visibility groups")
        parser.add_argument("--format", choices=FORMATS, help="default: detected from the path")
        parser.add_argument("--id-column", help="JSONL field / CSV column of the external id (default _id or id)")
        parser.add_argument("--title-column", help="JSONL field / CSV column of the title (default title)")
        parser.add_argument("--text-column", help="JSONL field / CSV column of the text (default text)")
        parser.add_argument("--encoding", help="encoding the files are in (enforced); default: UTF-8 for "
                            "JSONL/CSV, detected for .txt/.md, <meta charset> for HTML")
        parser.add_argument("--max-bytes", type=int, help="largest file accepted (default: settings.UPLOAD_MAX_BYTES)")
        parser.add_argument("--no-chunk-count", action="store_true",
                            help="skip counting the chunks of the changed documents (it loads the tokenizer)")

    def handle(self, *args, slug, path, create, name, format, id_column, title_column, text_column,
               encoding, max_bytes, no_chunk_count, verbosity, language=None, visibility=None, groups=None,
               **options):
        started = time.monotonic()
        path = path.expanduser()
        if language is not None:
            try:
                check_language(language)
            except UnknownLanguage as exc:
                raise CommandError(f"{exc} (nothing was imported)") from None
        try:
            fmt = format or detect_format(path)
            sources = sources_from_path(path, fmt)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        collection = Collection.objects.filter(slug=slug).first()
        if collection is None:
            if not create:
                raise CommandError(f"no collection with slug {slug!r}; pass --create to create it")
            try:
                visibility, new_groups = collection_access(visibility, groups)
            except ValueError as exc:
                raise CommandError(f"{exc} (nothing was imported)") from None
            collection = Collection(name=name or slug, slug=slug, visibility=visibility)
            if language is not None:
                collection.language = language
            collection.embedding_model = default_embedding_model(collection.language)
            try:
                collection.full_clean()
            except ValidationError as exc:
                raise CommandError(f"cannot create collection {slug!r}: {'; '.join(exc.messages)}") from None
            # Created only together with its documents: an import that crashes leaves nothing.
        elif language is not None and language != collection.language:
            # Quietly importing into another language than asked would leave a surprise for later.
            raise CommandError(f"collection {slug!r} exists with language {collection.language!r}, not {language!r}; "
                               f"change it with `rebuild_index {slug} --language {language}` (nothing was imported)")
        elif (visibility is not None and visibility != collection.visibility) or (
                groups and set(groups) != set(collection.groups.values_list("name", flat=True))):
            # Who may search a collection is changed in the admin, where it is seen; not on the side
            # by an import.
            raise CommandError(f"collection {slug!r} exists with visibility {describe_access(collection)}; "
                               "--visibility and --group only apply to a collection created now (change them on "
                               "its page in the admin; nothing was imported)")
        options = ImportOptions(id_column, title_column, text_column, encoding, max_bytes)

        self.stdout.write(f"Importing {path} ({fmt}, {len(sources)} file(s)) into collection {slug!r}")
        try:
            with progress(desc="documents", unit="doc", disable=verbosity == 0) as bar, transaction.atomic():
                if collection.pk is None:
                    collection.save()
                    collection.groups.set(new_groups)
                    self.stdout.write(f"Created collection {slug!r}.")
                    self.stdout.write(f"Visibility {describe_access(collection)}.")
                    if collection.visibility != Collection.Visibility.PUBLIC:
                        self.stdout.write("Who may search it is set on its page in the admin "
                                          "(or create it with --visibility / --group).")

                def advance(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done)

                report = import_sources(collection, sources, options, progress=advance)
        except ImportBusy as exc:
            raise CommandError(f"nothing was imported: {exc}") from None
        except OperationalError as exc:  # SQLite: the whole database is held by another writer
            if is_lock_timeout(exc):
                raise CommandError(f"nothing was imported: the database stayed locked by another writer ({exc}); "
                                   "try again when it has finished") from None
            raise

        self.print_report(report)
        if report.changed_ids and not no_chunk_count:
            self.print_chunk_count(collection, report.changed_ids, verbosity)
        self.stdout.write(f"Took {time.monotonic() - started:.1f}s.")
        if report.has_rejections:
            raise CommandError(
                f"{report.rejected_files} file(s) and {report.rejected_records} record(s) were rejected; "
                "everything else was imported"
            )

    def print_report(self, report) -> None:
        listed = 0
        for file_report in report.files:
            if file_report.error:
                self.stderr.write(f"REJECTED {file_report.name}: {file_report.error}")
            for rejection in file_report.rejected:
                if listed < MAX_LISTED_REJECTIONS:
                    self.stderr.write(f"rejected {file_report.name} {rejection}")
                listed += 1
        if listed > MAX_LISTED_REJECTIONS:
            self.stderr.write(f"... and {listed - MAX_LISTED_REJECTIONS} more rejected records")
        self.stdout.write(
            f"Created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
            f"rejected {report.rejected_records} record(s) and {report.rejected_files} file(s); "
            f"{len(report.changed_ids)} document(s) queued for indexing."
        )

    def print_chunk_count(self, collection, document_ids, verbosity) -> None:
        chunker, max_tokens, overlap = collection_chunker(collection)
        total = 0
        with progress(total=len(document_ids), desc="chunking", unit="doc", disable=verbosity == 0) as bar:
            for start in range(0, len(document_ids), 500):
                batch = document_ids[start:start + 500]
                for text in Document.objects.filter(pk__in=batch).values_list("text", flat=True):
                    total += len(chunker(text))
                bar.update(len(batch))
        self.stdout.write(
            f"The {len(document_ids)} changed document(s) make {total} chunk(s) at "
            f"{max_tokens} tokens with {overlap} overlap ({collection.embedding_model})."
        )
