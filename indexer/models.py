"""Collections and their documents: the database is the source of truth for what should be
searchable; Elasticsearch holds derived chunks and vectors (see indexer/pipeline.py).

Chunks are not stored in the database: they are a pure function of a document's text and its
collection's chunking settings and tokenizer (indexer/chunking.py), so storing them would only
duplicate millions of rows that Elasticsearch already holds and that a rebuild recomputes
anyway. Each indexed chunk carries its character offsets into `Document.text`, which is what
snippets and highlights need.
"""
from __future__ import annotations

import hashlib
import json
import re

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.text import slugify

from .analysis import DEFAULT_LANGUAGE, LANGUAGES
from .store import default_index_options

TITLE_MAX_LENGTH = 500
EXTERNAL_ID_MAX_LENGTH = 255
# A metadata key as searches filter on it (meta.<key>) and facets count it (metadata.<key>).
METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
FACET_FIELDS_MAX = 10


def default_embedding_model(language: str) -> str:
    """The bi-encoder a new collection of `language` gets: EMBEDDING_MODEL_ZH for Chinese,
    EMBEDDING_MODEL for everything else (docs/models.md says why these)."""
    return settings.EMBEDDING_MODEL_ZH if language == "zh" else settings.EMBEDDING_MODEL


def default_visibility() -> str:
    """A new collection's visibility: settings.DEFAULT_COLLECTION_VISIBILITY (checked below)."""
    return settings.DEFAULT_COLLECTION_VISIBILITY


# Limits of a collection's index layout. Elasticsearch allows up to 1024 shards per index, but
# a collection here holds at most millions of small chunks (a shard does well up to tens of
# millions), and each replica is a full copy of the index on another node.
MAX_SHARDS = 64
MAX_REPLICAS = 8


def default_shards() -> int:
    """A new collection's shards: settings.INDEX_SHARDS (checked below)."""
    return settings.INDEX_SHARDS


def default_replicas() -> int:
    """A new collection's replicas: settings.INDEX_REPLICAS (checked below)."""
    return settings.INDEX_REPLICAS


def check_layout(shards: int, replicas: int) -> tuple[int, int]:
    """(shards, replicas) when both are within the limits; ValueError naming the bad one otherwise."""
    for name, value, low, high in (("shards", shards, 1, MAX_SHARDS), ("replicas", replicas, 0, MAX_REPLICAS)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return shards, replicas


class Collection(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public (anyone)"
        AUTHENTICATED = "authenticated", "Signed-in users"
        GROUPS = "groups", "Selected groups"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=default_visibility)
    groups = models.ManyToManyField(
        Group, blank=True, related_name="collections",
        help_text="With visibility 'Selected groups': the groups whose members may search it.",
    )
    # Empty when created: filled in on save with the default for the collection's language.
    embedding_model = models.CharField(
        max_length=300, blank=True,
        help_text="The bi-encoder of chunks and queries: a model name of the catalogue (manage.py install_model "
                  "--list), a sentence-transformers id or a local directory. Empty: the default for the "
                  "collection's language. Changing it takes a rebuild of the index.",
    )
    # Part of an index build like the model: the live index keeps its language until a rebuild
    # (indexer/builds.py); searches analyze the query in the language of the live index.
    language = models.CharField(
        max_length=10, choices=list(LANGUAGES.items()), default=DEFAULT_LANGUAGE,
        help_text="Analysis of the keyword (BM25) stage: stemming and stop words for English, word "
                  "segmentation for Chinese, or none. Changing it takes a rebuild of the index.",
    )
    chunk_size = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(16), MaxValueValidator(8192)],
        help_text="Chunk length in tokens of the embedding model (capped at the model's maximum).",
    )
    chunk_overlap = models.PositiveIntegerField(
        default=32, validators=[MaxValueValidator(4096)],
        help_text="Tokens shared by consecutive chunks.",
    )
    reranker_model = models.CharField(
        max_length=500, blank=True,
        help_text="Cross-encoder id or directory for this collection; empty uses the site default.",
    )
    # Why an automatic training run (relevance/auto_reranker.py) installed no reranker; a search
    # of the collection without one says it ("not reranked: ..."). Cleared when one is installed.
    reranker_note = models.TextField(
        blank=True, editable=False,
        help_text="Why the collection's automatic reranker training installed no model.",
    )
    # Set by `manage.py choose_fusion` (relevance/fusion_choice.py): {"rule": {...}, "model": the
    # bi-encoder it was chosen with, "queries", "ndcg", "default_ndcg", "chosen_at"}. Read by the
    # hybrid mode (search/retrieval.py collection_fusion) only while the live index serves that model.
    hybrid_fusion = models.JSONField(
        default=dict, blank=True, editable=False,
        help_text="The hybrid mode's fusion rule chosen on this collection's judged queries (manage.py "
                  "choose_fusion); empty: the language's default.",
    )
    # Index layout of the next build (indexer/builds.py). The default is the engine's
    # (indexer/store.py): on Elasticsearch BBQ, which had the best kNN recall and needs the least
    # memory (docs/indexing.md; at least 64 dimensions); OpenSearch's lucene engine has no BBQ.
    index_options = models.CharField(
        max_length=20, choices=[(t, t) for t in ("hnsw", "int8_hnsw", "bbq_hnsw")], default=default_index_options,
        help_text="HNSW vector storage of the index: float32, int8 or binary (BBQ) quantised.",
    )
    # Index layout of the next build, like index_options: the live index keeps its own until a
    # rebuild (indexer/builds.py).
    shards = models.PositiveSmallIntegerField(
        default=default_shards, validators=[MinValueValidator(1), MaxValueValidator(MAX_SHARDS)],
        help_text="Primary shards of the collection's index (Elasticsearch). Changing it takes a rebuild.",
    )
    replicas = models.PositiveSmallIntegerField(
        default=default_replicas, validators=[MaxValueValidator(MAX_REPLICAS)],
        help_text="Copies of each shard on other nodes: 1 or more on a cluster keeps searches and indexing "
                  "going when a node stops; 0 on a single node. Changing it takes a rebuild.",
    )
    facet_fields = models.CharField(
        max_length=1000, blank=True,
        help_text=f"Metadata keys whose values the search page counts and offers as filters (facets), "
                  f"comma-separated, at most {FACET_FIELDS_MAX}; e.g. 'year, journal'.",
    )
    keep_old_indices = models.PositiveIntegerField(
        default=1, validators=[MaxValueValidator(20)],
        help_text="Previous build indices kept after a rebuild swaps the alias (for rollback).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:100]
        if not self.embedding_model:
            self.embedding_model = default_embedding_model(self.language)
        super().save(*args, **kwargs)

    @property
    def facet_keys(self) -> list[str]:
        """facet_fields as a list, in the order given, without repeats."""
        return list(dict.fromkeys(key.strip() for key in self.facet_fields.split(",") if key.strip()))

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.chunk_overlap >= self.chunk_size:
            raise ValidationError({"chunk_overlap": "Overlap must be smaller than the chunk size."})
        bad = [key for key in self.facet_keys if not METADATA_KEY.match(key)]
        if bad:
            raise ValidationError({"facet_fields": f"Not a metadata key: {bad[0][:60]!r} (letters, digits, "
                                                   f"'_', '.', '-'; at most 100 characters)."})
        if len(self.facet_keys) > FACET_FIELDS_MAX:
            raise ValidationError({"facet_fields": f"At most {FACET_FIELDS_MAX} facet fields."})
        self.facet_fields = ", ".join(self.facet_keys)


# Every process imports the models at start-up: a bad setting stops it there, not at the first
# collection someone creates.
if settings.DEFAULT_COLLECTION_VISIBILITY not in Collection.Visibility.values:
    raise ImproperlyConfigured(
        f"DEFAULT_COLLECTION_VISIBILITY must be one of {', '.join(Collection.Visibility.values)}, "
        f"not {settings.DEFAULT_COLLECTION_VISIBILITY!r}")
for _name, _low, _high in (("INDEX_SHARDS", 1, MAX_SHARDS), ("INDEX_REPLICAS", 0, MAX_REPLICAS)):
    if not _low <= getattr(settings, _name) <= _high:
        raise ImproperlyConfigured(f"{_name} must be a whole number from {_low} to {_high}, "
                                   f"not {getattr(settings, _name)!r}")


class Document(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        QUEUED = "queued", "Queued"
        INDEXING = "indexing", "Indexing"
        INDEXED = "indexed", "Indexed"
        FAILED = "failed", "Failed"
        REMOVED = "removed", "Removed from index"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents")
    external_id = models.CharField(max_length=EXTERNAL_ID_MAX_LENGTH)
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True)
    text = models.TextField()
    source_filename = models.CharField(max_length=500, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    last_error = models.TextField(blank=True)
    indexed_model = models.CharField(max_length=300, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    indexed_hash = models.CharField(
        max_length=64, blank=True, help_text="content_hash of the version that is in the index."
    )
    indexed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["collection", "external_id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "external_id"], name="unique_external_id_per_collection"),
        ]
        indexes = [models.Index(fields=["collection", "status"])]

    def __str__(self) -> str:
        return f"{self.collection.slug}/{self.external_id}"

    @staticmethod
    def compute_hash(title: str, text: str, metadata: dict) -> str:
        """What decides whether a document must be re-indexed: everything that reaches the index."""
        payload = json.dumps([title, text, metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def refresh_hash(self) -> None:
        self.content_hash = self.compute_hash(self.title, self.text, self.metadata)


class IndexBuild(models.Model):
    """One Elasticsearch index of a collection, built by the `embed` workers (indexer/builds.py).

    A rebuild fills a new index while the collection's alias keeps serving the previous one, then
    swaps the alias. Document statuses follow the newest index (the one being built, if any), so
    progress is counted from them; the counters below are a snapshot refreshed after each batch.
    """

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        FINALIZING = "finalizing", "Checking and swapping"
        LIVE = "live", "Live (alias points here)"
        RETIRED = "retired", "Retired"
        FAILED = "failed", "Failed"

    IN_PROGRESS = (Status.BUILDING, Status.FINALIZING)

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="builds")
    index_name = models.CharField(max_length=255, unique=True)
    model_id = models.CharField(max_length=300)
    language = models.CharField(max_length=10, choices=list(LANGUAGES.items()),
                                help_text="Keyword analysis the index was built with (indexer/analysis.py).")
    dims = models.PositiveIntegerField(null=True, blank=True)
    index_options = models.CharField(max_length=20)
    # Builds from before layouts were configurable had 1 shard and no replica.
    shards = models.PositiveSmallIntegerField(default=1)
    replicas = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.BUILDING, db_index=True)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    total_documents = models.PositiveIntegerField(default=0)
    done_documents = models.PositiveIntegerField(default=0)
    failed_documents = models.PositiveIntegerField(default=0)
    done_chunks = models.PositiveIntegerField(default=0)
    check_rounds = models.PositiveSmallIntegerField(
        default=0, help_text="Times the final check sent documents back to be indexed again.")
    index_deleted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Only one build per collection at a time, enforced by the database itself.
            models.UniqueConstraint(
                fields=["collection"], condition=models.Q(status__in=["building", "finalizing"]),
                name="one_build_in_progress_per_collection",
            ),
        ]

    def __str__(self) -> str:
        return self.index_name

    @property
    def in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS

    @property
    def elapsed_seconds(self) -> float:
        from django.utils import timezone

        end = self.finished_at or (timezone.now() if self.in_progress else self.progress_at) or self.created_at
        return max((end - self.created_at).total_seconds(), 0.0)

    @property
    def documents_per_second(self) -> float | None:
        elapsed = self.elapsed_seconds
        return self.done_documents / elapsed if elapsed > 0 and self.done_documents else None

    @property
    def chunks_per_second(self) -> float | None:
        elapsed = self.elapsed_seconds
        return self.done_chunks / elapsed if elapsed > 0 and self.done_chunks else None

    @property
    def eta_seconds(self) -> float | None:
        """Remaining documents at the average rate so far (None until there is a rate)."""
        rate = self.documents_per_second
        if not self.in_progress or not rate:
            return None
        remaining = max(self.total_documents - self.done_documents - self.failed_documents, 0)
        return remaining / rate
