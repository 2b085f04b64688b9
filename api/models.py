"""API keys: what an application may touch. Only a hash of each key is stored (api/keys.py)."""
from __future__ import annotations

from django.db import models
from django.utils import timezone

from indexer.models import Collection


class ApiKey(models.Model):
    name = models.CharField(max_length=200, help_text="Who or what uses the key (an application, a sync job).")
    # The key's first part, stored as it is: it finds the row and tells keys apart in the admin and
    # the logs; the secret part is only in `key_hash`.
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    collections = models.ManyToManyField(
        Collection, related_name="api_keys",
        help_text="The collections the key reads (and writes, with write access); searches also cover the "
                  "public collections.")
    can_write = models.BooleanField(
        default=False, verbose_name="read and write",
        help_text="Off: read only (search, rerank, read documents). On: also create, update and delete "
                  "documents in its collections.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name", "created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def access(self) -> str:
        return "read and write" if self.can_write else "read"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
