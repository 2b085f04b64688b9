"""Making and checking API keys.

A key is `<prefix>.<secret>`: 12 hex characters that find its row, then 43 URL-safe characters
(256 random bits). The database holds the prefix and SHA-256 of the whole key, never the key: a
leaked table gives no usable key, and with 256 random bits a fast hash is as good as a slow one
(slow hashes protect guessable passwords). The hash is compared with hmac.compare_digest, and an
unknown prefix is compared against a dummy hash, so the answer takes the same time whether or not
the prefix exists. The key itself is never logged: errors name the prefix at most.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .models import ApiKey

KEY_FORMAT = re.compile(r"^([0-9a-f]{12})\.([A-Za-z0-9_\-]{43})$")
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class KeyRefused(Exception):
    """The Authorization header names no usable key; the message says why (401)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def new_key_text() -> tuple[str, str]:
    """(prefix, key) of a fresh random key."""
    prefix = secrets.token_hex(6)
    return prefix, f"{prefix}.{secrets.token_urlsafe(32)}"


@transaction.atomic
def create_key(name: str, collections, *, can_write: bool = False, expires_at=None,
               created_by: str = "") -> tuple[ApiKey, str]:
    """A new key for `collections` (Collection objects); returns the row and the key, which is
    shown once and cannot be recovered."""
    row = ApiKey(name=name, can_write=can_write, expires_at=expires_at, created_by=created_by)
    key = assign_new_secret(row)
    row.save()
    row.collections.set(collections)
    return row, key


def assign_new_secret(row: ApiKey) -> str:
    """Give an unsaved ApiKey its prefix and hash (create_key, the admin's add form); returns
    the key."""
    prefix, key = new_key_text()
    while ApiKey.objects.filter(prefix=prefix).exists():  # 2^48 prefixes: practically never
        prefix, key = new_key_text()
    row.prefix, row.key_hash = prefix, hash_key(key)
    return key


def authenticate(header: str) -> ApiKey:
    """The ApiKey of an `Authorization: Bearer <key>` header; KeyRefused saying why not."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise KeyRefused("the Authorization header must be 'Bearer <API key>'")
    token = token.strip()
    match = KEY_FORMAT.match(token)
    row = ApiKey.objects.filter(prefix=match.group(1)).first() if match else None
    expected = row.key_hash if row is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected, hash_key(token) if token.isascii() else "")
    if row is None or not matches:
        raise KeyRefused("unknown API key")
    if row.revoked:
        raise KeyRefused("this API key was revoked")
    if row.expired:
        raise KeyRefused("this API key has expired")
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


def parse_expiry(text: str):
    """`30d`, `12h`, `2027-01-31` or an ISO date-time: the moment a key expires; ValueError
    saying what is accepted."""
    from datetime import datetime

    text = text.strip()
    match = re.fullmatch(r"(\d+)\s*([dh])", text)
    if match:
        amount = int(match.group(1))
        if amount < 1:
            raise ValueError("the expiry must be at least 1 day or 1 hour")
        return timezone.now() + (timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--expires takes a number of days or hours (30d, 12h) or a date (2027-01-31), "
                         f"not {text[:40]!r}") from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    if moment <= timezone.now():
        raise ValueError(f"the expiry {text!r} is in the past")
    return moment
