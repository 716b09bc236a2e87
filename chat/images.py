"""Generated images: stored with the configured storage (local media/ or S3/R2) under validated keys."""

import re
import uuid
from datetime import UTC, datetime

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_KEY = re.compile(r"^generation/(?P<user>\d+)/\d{8}T\d{6}Z-[0-9a-f]{32}\.png$")


class ImageKeyError(ValueError):
    pass


def new_image_key(user_id: int) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"generation/{user_id}/{stamp}-{uuid.uuid4().hex}.png"


def check_image_key(key: str) -> str:
    """Only keys we create are accepted: no traversal, no other folders, no other file types."""
    if not isinstance(key, str) or not IMAGE_KEY.fullmatch(key):
        raise ImageKeyError("Not an image key.")
    return key


def store_image(user_id: int, data: bytes) -> str:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("The provider returned something that is not a PNG image.")
    key = new_image_key(user_id)
    saved = default_storage.save(key, ContentFile(data))
    return saved


def open_image(key: str):
    """A file object for a stored image, or FileNotFoundError."""
    key = check_image_key(key)
    if not default_storage.exists(key):
        raise FileNotFoundError(key)
    return default_storage.open(key, "rb")


def image_urls(key: str) -> dict:
    download = reverse("api:download_image", kwargs={"key": key})
    return {"key": key, "previewUrl": f"{download}?inline=1", "downloadUrl": download}
