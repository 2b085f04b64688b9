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

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.text import slugify

TITLE_MAX_LENGTH = 500
EXTERNAL_ID_MAX_LENGTH = 255


class Collection(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public (anyone)"
        AUTHENTICATED = "authenticated", "Signed-in users"
        GROUPS = "groups", "Selected groups"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC)
    groups = models.ManyToManyField(
        Group, blank=True, related_name="collections",
        help_text="With visibility 'Selected groups': the groups whose members may search it.",
    )
    embedding_model = models.CharField(
        max_length=300, default=settings.EMBEDDING_MODEL,
        help_text="A sentence-transformers model id or local directory used to embed chunks and queries.",
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:100]
        super().save(*args, **kwargs)

    def clean(self):
        from django.core.exceptions import ValidationError

        if self.chunk_overlap >= self.chunk_size:
            raise ValidationError({"chunk_overlap": "Overlap must be smaller than the chunk size."})


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
