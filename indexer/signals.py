"""Deleting rows removes what they put into Elasticsearch (after the transaction commits).

Deleting a collection drops all its indices (the alias goes with them); deleting a document
removes its chunks from every index of its collection. Both go through the `embed` queue, so
Elasticsearch being down at that moment only delays the removal (the task retries), and
reconcile_index deletes any chunk whose document is gone.
"""
from __future__ import annotations

from django.db import transaction
from django.db.models.signals import pre_delete
from django.dispatch import receiver

from .models import Collection, Document, IndexBuild


@receiver(pre_delete, sender=Collection, dispatch_uid="indexer.collection_indices")
def drop_collection_indices(sender, instance: Collection, **kwargs):
    from .index import alias_name, indices_behind

    names = set(IndexBuild.objects.filter(collection=instance, index_deleted=False)
                .values_list("index_name", flat=True))
    try:
        names.update(indices_behind(alias_name(instance.slug)))
    except Exception:  # Elasticsearch down: the recorded builds are all we know of
        pass
    if names:
        def send():
            from .tasks import drop_indices

            drop_indices.delay(sorted(names))

        transaction.on_commit(send)


@receiver(pre_delete, sender=Document, dispatch_uid="indexer.document_chunks")
def remove_document_chunks(sender, instance: Document, **kwargs):
    collection_id, document_id = instance.collection_id, instance.pk

    def send():
        # A collection deleted with its documents drops whole indices instead.
        if Collection.objects.filter(pk=collection_id).exists():
            from .tasks import remove_deleted_documents

            remove_deleted_documents.delay(collection_id, [document_id])

    transaction.on_commit(send)
