"""Images as input: a turn's attached images, made ready to be sent to a model that sees images.

Every provider takes JPEG and PNG (GIF and WebP only some: Gemini takes no GIF), so other types (BMP, TIFF, GIF)
become PNG, of their first frame; an image larger than MAX_SIDE pixels on a side is scaled down (the providers
scale larger ones down anyway, and charge for the bytes sent); one still too heavy becomes JPEG. The image also
reaches retrieval through OCR, as every image does (chat.grounding.ingest_files): the two are independent.

Only the turn's own images are sent as images. Earlier turns' images are not sent again: the history is text (their
OCR text stays searchable in the chat's files)."""

import io

from PIL import Image, ImageOps

from chat.providers.content import image_part
from rag.types import Upload

MAX_SIDE = 2048
# Anthropic refuses an image over 5 MB of base64, i.e. 3.75 MB of bytes; the other providers allow more.
MAX_BYTES = 3_750_000
PASSED_AS_IS = ("image/jpeg", "image/png")
JPEG_QUALITY = 85


def images_for_model(files) -> list[dict]:
    """The image parts (chat.providers.content) of a turn's files (chat.services.TurnFile): its images only, in
    the order attached."""
    return [prepare_image(file.upload) for file in files if file.upload.kind == "image"]


def prepare_image(upload: Upload) -> dict:
    """One image part: JPEG or PNG, at most MAX_SIDE pixels on a side and MAX_BYTES. The upload was decoded once
    already (rag.files.check_upload), so it opens."""
    with Image.open(io.BytesIO(upload.data)) as image:
        fits = max(image.size) <= MAX_SIDE and len(upload.data) <= MAX_BYTES
        if upload.mime in PASSED_AS_IS and fits and _upright(image):
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
