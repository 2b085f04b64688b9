"""Deleting rows removes what they put into the index (after the transaction commits).

Deleting a collection drops all its indices (the alias goes with them); deleting a document
removes its chunks from every index of its collection. Both go through the `embed` queue, so
the engine being down at that moment only delays the removal (the task retries), and the
reconcile deletes any chunk whose document is gone.
"""
from __future__ import annotations

import logging

from django.db.models.signals import pre_delete
from django.dispatch import receiver

from . import tasks
from .models import Collection, Document, IndexBuild
from .store import alias_name, get_store

log = logging.getLogger(__name__)


@receiver(pre_delete, sender=Collection, dispatch_uid="indexer.collection_indices")
def drop_collection_indices(sender, instance: Collection, **kwargs):
    names = set(IndexBuild.objects.filter(collection=instance, index_deleted=False)
                .values_list("index_name", flat=True))
    try:
        names.update(get_store().indices_behind(alias_name(instance.slug)))
    except Exception as exc:  # the engine down: the recorded builds are all we know of
        log.warning("collection %s deleted; indices behind its alias unknown (%s), dropping the recorded ones",
                    instance.slug, exc)
    tasks.queue_index_drop(sorted(names))


@receiver(pre_delete, sender=Document, dispatch_uid="indexer.document_chunks")
def remove_document_chunks(sender, instance: Document, **kwargs):
    tasks.queue_chunk_deletion(instance.collection_id, [instance.pk])
