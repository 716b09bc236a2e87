"""Images as input: a turn's attached images, made ready to be sent to a model that sees images.

Every provider takes JPEG, PNG and WebP (OpenAI, Anthropic and Gemini alike; GIF only some: Gemini takes no GIF),
so those three are sent as they are, and other types (BMP, TIFF, GIF, an animated WebP, which OpenAI refuses)
become PNG, of their first frame; an image larger than MAX_SIDE pixels on a side is scaled down (the providers
scale larger ones down anyway, and charge for the bytes sent); one still too heavy becomes JPEG. The image also
reaches retrieval through OCR, as every image does (chat.grounding.ingest_files): the two are independent.

Only the turn's own images are sent as images. Earlier turns' images are not sent again: the history is text (their
OCR text stays searchable in the chat's files). A regenerated or edited turn is the same turn asked again, so its
images are: `images_of_query` reads them back from the chat's documents (rag keeps an image's original even when
it had no text to read)."""

import hashlib
import io
import logging

from PIL import Image, ImageOps

from chat.providers.content import image_part
from rag.models import Document
from rag.types import Upload

logger = logging.getLogger(__name__)

MAX_SIDE = 2048
# Anthropic refuses an image over 5 MB of base64, i.e. 3.75 MB of bytes; the other providers allow more.
MAX_BYTES = 3_750_000
PASSED_AS_IS = ("image/jpeg", "image/png", "image/webp")
JPEG_QUALITY = 85


def images_for_model(files) -> list[dict]:
    """The image parts (chat.providers.content) of a turn's files (chat.services.TurnFile): its images only, in
    the order attached."""
    return [prepare_image(file.upload) for file in files if file.upload.kind == "image"]


def prepare_image(upload: Upload) -> dict:
    """One image part: JPEG, PNG or WebP, at most MAX_SIDE pixels on a side and MAX_BYTES. The upload was decoded once
    already (rag.files.check_upload), so it opens."""
    with Image.open(io.BytesIO(upload.data)) as image:
        fits = max(image.size) <= MAX_SIDE and len(upload.data) <= MAX_BYTES
        still = getattr(image, "n_frames", 1) == 1  # an animated WebP: its first frame, as for a GIF
        if upload.mime in PASSED_AS_IS and fits and still and _upright(image):
            return image_part(upload.mime, upload.data)
        image.seek(0)  # the first frame of a GIF or multi-page TIFF
        frame = ImageOps.exif_transpose(image)  # a phone photo's rotation is applied before the EXIF is dropped
        frame.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        return _encoded(frame)


def _upright(image: Image.Image) -> bool:
    """No EXIF rotation to apply (passed as is, a rotated phone photo would be seen as stored)."""
    return image.getexif().get(0x0112, 1) == 1


def _encoded(frame: Image.Image) -> dict:
    if frame.mode not in ("RGB", "RGBA", "L", "LA"):
        frame = frame.convert("RGBA" if "transparency" in frame.info or "A" in frame.mode else "RGB")
    png = io.BytesIO()
    frame.save(png, format="PNG", optimize=False)
    if png.tell() <= MAX_BYTES:
        return image_part("image/png", png.getvalue())
    # A photo saved as PNG can be several times larger than as JPEG: send it as JPEG (no alpha in JPEG).
    jpeg = io.BytesIO()
    frame.convert("RGB").save(jpeg, format="JPEG", quality=JPEG_QUALITY)
    return image_part("image/jpeg", jpeg.getvalue())


def files_of_query(query) -> list[dict]:
    """The summaries of the files attached to `query`'s turn (chat.services._file_summary, in its metadata)."""
    files = (query.metadata or {}).get("files") if isinstance(query.metadata, dict) else None
    return [file for file in files or [] if isinstance(file, dict) and isinstance(file.get("name"), str)]


def images_of_query(query, files: list[dict] | None = None) -> list[Upload]:
    """The images attached to `query`'s turn (or those of `files`, its summaries), read back from the chat's
    documents, in the order attached; one the chat no longer has (deleted, or the turn stopped before reading
    it) is left out. Summaries from before the sha256 was kept are matched by name and size."""
    images = [file for file in (files_of_query(query) if files is None else files) if file.get("kind") == "image"]
    if not images:
        return []
    documents = list(Document.objects.filter(chat_id=query.chat_id, kind="image").exclude(file=""))
    uploads = []
    for file in images:
        document = next((d for d in documents if file.get("sha256") and d.sha256 == file["sha256"]), None) or next(
            (d for d in documents if d.name == file["name"] and d.size == file.get("size")), None
        )
        data = _read(document) if document is not None else None
        if data is not None and hashlib.sha256(data).hexdigest() == document.sha256:
            uploads.append(Upload(file["name"], "image", document.mime, data, document.sha256))
    return uploads


def _read(document: Document) -> bytes | None:
    try:
        with document.file.open("rb") as stored:
            return stored.read()
    except OSError:  # the stored copy is gone: the image is left out, as one the chat no longer has
        logger.warning("an image's stored original could not be read", extra={"document": document.pk})
        return None
