"""Who is calling the API and what they may touch: an API key (its collections, read or read and
write) or a browser session (the collections the user may see; writes for staff with the
document permissions). One unknown-collection answer for a collection that does not exist and one
the caller may not touch, so that its existence is not revealed."""
from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.db.models import Q

from indexer.models import Collection
from search.retrieval import visible_collections

from .models import ApiKey


class ApiError(Exception):
    """An answer other than 200: `status`, the message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def unknown_collection(slug: str) -> ApiError:
    return ApiError(404, f"unknown collection {slug[:100]!r}")


@dataclass
class Caller:
    key: ApiKey | None
    user: object  # the session's user (AnonymousUser with a key or without a session)

    @classmethod
    def of(cls, request) -> "Caller":
        return cls(getattr(request, "api_key", None), getattr(request, "user", None) or AnonymousUser())

    @property
    def signed_in(self) -> bool:
        return self.key is None and self.user.is_authenticated and self.user.is_active

    @property
    def who(self) -> str:
        """For logs: the key's prefix or the user id, never a secret."""
        return f"key {self.key.prefix}" if self.key else f"user {self.user.pk}" if self.signed_in else "anonymous"

    def require_identity(self) -> None:
        if self.key is None and not self.signed_in:
            raise ApiError(401, "send an API key: Authorization: Bearer <key> (or sign in)",
                           {"WWW-Authenticate": 'Bearer realm="api"'})

    def readable(self):
        """Collections whose documents the caller may list and read: exactly a key's collections;
        for a session, what the user may search."""
        if self.key is not None:
            return Collection.objects.filter(api_keys=self.key)
        if self.signed_in:
            return visible_collections(self.user)
        return Collection.objects.none()

    def searchable(self):
        """What a search with this key covers: its collections and the public ones."""
        return Collection.objects.filter(Q(api_keys=self.key) | Q(visibility=Collection.Visibility.PUBLIC)).distinct()

    def may_write(self, action: str) -> bool:
        """`action`: change (create and update) or delete."""
        if self.key is not None:
            return self.key.can_write
        return self.signed_in and self.user.is_staff and self.user.has_perm(f"indexer.{action}_document")

    def collection(self, slug: str, *, write: str | None = None) -> Collection:
        """The collection `slug` if the caller may read it (and write it: `write` = change or
        delete); 401 without a key or session, 403 for a caller that may not write at all, 404
        for a collection that does not exist or that the caller may not touch."""
        self.require_identity()
        if write and not self.may_write(write):
            raise ApiError(403, "this API key is read-only; writes need a key with write access"
                           if self.key else f"writing documents needs a staff account with the "
                                            f"indexer.{write}_document permission")
        collection = self.readable().filter(slug=slug).first()
        if collection is None:
            raise unknown_collection(slug)
        return collection
