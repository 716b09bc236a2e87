"""Documents uploaded into a chat or into a collection (shared by several chats: an assistant's files), and their
chunks with embeddings.

No raw SQL and no database-specific field types: the embedding is plain bytes, so a non-relational backend
(MongoDB) stays possible.
"""

import logging

import numpy as np
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils.text import get_valid_filename

logger = logging.getLogger(__name__)

# Embeddings are stored as float16, little-endian: half the bytes of float32 (768 instead of 1536 per 384-dim
# vector) for a rounding error of ~5e-4 relative per component, which moves a cosine by ~1e-4, far below the
# difference the int8 model itself makes (cosine 0.998 vs the PyTorch model). bench/rag_retrieval.py measures
# that the top 10 barely changes (see bench/README.md). Retrieval converts to float32 once, when it builds its
# index, because numpy's float16 matrix products do not use BLAS (20x slower).
EMBEDDING_DTYPE = np.dtype("<f2")


def encode_embedding(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embedding(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=EMBEDDING_DTYPE).astype(np.float32)


def document_upload_to(document: "Document", filename: str) -> str:
    """documents/<user id>/<sha256>/<safe name>: the owner's files, one folder per distinct content."""
    try:
        safe_name = get_valid_filename(filename)[-120:]
    except SuspiciousFileOperation:  # nothing usable left ("???", "..")
        safe_name = "file"
    return f"documents/{document.owner_id}/{document.sha256}/{safe_name}"


class Collection(models.Model):
    """Documents that belong to no chat but are searched by several: an assistant's files (chat.Assistant points
    to its collection; rag does not know what uses it). Read once into the collection, never copied per chat."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rag_collections")
    label = models.CharField(max_length=200, blank=True, help_text="What it is for (shown in admin)")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.label or f"collection {self.pk}"


class Document(models.Model):
    class Status(models.TextChoices):
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    # Exactly one of the two: a chat's own file, or a collection's (shared by the chats that use it).
    chat = models.ForeignKey("chat.Chat", on_delete=models.CASCADE, null=True, blank=True, related_name="documents")
    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, null=True, blank=True, related_name="documents"
    )
    name = models.CharField(max_length=255)
    kind = models.CharField(max_length=20)  # rag.types.Upload.kind: pdf | image | text | markdown
    mime = models.CharField(max_length=100)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField(default=0)  # bytes
    pages = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PROCESSING)
    error = models.TextField(blank=True)  # user-facing: why the file could not be used
    notes = models.JSONField(default=list, blank=True)  # user-facing remarks from extraction
    embedding_model = models.CharField(max_length=100, blank=True)  # rag.embeddings.Embedder.name
    # The original file, so a citation can link to it (served to the chat's owner only).
    file = models.FileField(upload_to=document_upload_to, blank=True, max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    # Renewed while an ingest makes progress: a `processing` document that stops moving was abandoned.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The same file twice in a chat is processed once.
            models.UniqueConstraint(fields=["chat", "sha256"], name="rag_document_unique_file_per_chat"),
            models.UniqueConstraint(fields=["collection", "sha256"], name="rag_document_unique_file_per_collection"),
            models.CheckConstraint(
                condition=models.Q(chat__isnull=False, collection__isnull=True)
                | models.Q(chat__isnull=True, collection__isnull=False),
                name="rag_document_in_a_chat_or_a_collection",
            ),
        ]
        indexes = [
            models.Index(fields=["chat", "status"]),
            models.Index(fields=["collection", "status"], name="rag_document_collection_ready"),
        ]

    def __str__(self):
        return self.name

    @property
    def owner_id(self):
        """The user whose file it is: the chat's owner, or the collection's."""
        return self.chat.owner_id if self.chat_id else self.collection.owner_id


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Denormalised from document.chat / document.collection: retrieval loads their chunks without a join.
    chat = models.ForeignKey("chat.Chat", on_delete=models.CASCADE, null=True, blank=True, related_name="chunks")
    collection = models.ForeignKey(
        Collection, on_delete=models.CASCADE, null=True, blank=True, related_name="chunks"
    )
    position = models.PositiveIntegerField()  # 0-based order within the document
    page = models.PositiveIntegerField(default=1)  # the page the chunk starts on
    heading = models.TextField(blank=True)
    text = models.TextField()
    tokens = models.PositiveIntegerField(default=0)
    embedding = models.BinaryField()  # EMBEDDING_DTYPE bytes; length / 2 = the embedder's dimensions

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "position"], name="rag_chunk_unique_position"),
        ]
        indexes = [
            models.Index(fields=["chat", "document"]),
            models.Index(fields=["collection", "document"], name="rag_chunk_collection_document"),
        ]

    def __str__(self):
        return f"{self.document_id}#{self.position}"

    @property
    def vector(self) -> np.ndarray:
        return decode_embedding(bytes(self.embedding))


@receiver(post_delete, sender=Document)
def _delete_stored_file(sender, instance: Document, **kwargs):
    """A deleted document (or a deleted chat or collection) takes its file along, unless another document (the same
    file in another chat or collection of the same user) still uses it. After the commit, so a rolled-back delete
    keeps the file."""
    name = instance.file.name if instance.file else ""
    if not name:
        return

    def delete_if_unused():
        if Document.objects.filter(file=name).exists():
            return
        try:
            default_storage.delete(name)
        except Exception:  # the row is gone either way; a leftover file is logged, not fatal
            logger.warning("could not delete a document's stored file", exc_info=True)

    transaction.on_commit(delete_if_unused)
