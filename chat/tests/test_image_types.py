"""Every image type we accept reaches each vision provider as a type that provider takes, through its real SDK: PNG,
JPEG and WebP as they are, GIF (which Gemini refuses) and an animated WebP as a PNG of their first frame. The
emulator refuses (400) a type its API does not take, or bytes that are not the type declared, as the providers do.
The same images are read by OCR for retrieval, and the OpenAI-compatible endpoint takes WebP data URLs too."""

import base64
import io
import json

import pytest
from PIL import Image

from chat import vision
from chat.tests.test_image_input import (
    INVOICE,
    VISION_MODELS,
    completed,
    excerpts_reached_the_model,
    generations,
    received,
    size_of,
    turn,
    upload,
    vision_models,  # noqa: F401 - a fixture
)
from rag.files import check_upload
from rag.models import Document
from testsupport.emulator import BadImage, images_in
from testsupport.files import make_image, make_multiframe_image
from testsupport.http import ServerAsyncClient, bearer

transactional = pytest.mark.django_db(transaction=True)

# (Pillow format, file name, the MIME type attached, the MIME type the provider is sent)
TYPES = {
    "PNG": ("invoice.png", "image/png", "image/png"),
    "JPEG": ("invoice.jpg", "image/jpeg", "image/jpeg"),
    "WEBP": ("invoice.webp", "image/webp", "image/webp"),
    "GIF": ("invoice.gif", "image/gif", "image/png"),
}


@transactional
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("fmt", list(TYPES))
async def test_each_image_type_reaches_each_vision_provider_as_a_type_it_takes(
    emulator, vision_models, owner_key, provider, fmt  # noqa: F811
):
    name, attached_mime, sent_mime = TYPES[fmt]
    data = make_image(INVOICE, fmt)

    events = await turn(
        owner_key, files=[upload(data, name, attached_mime)], prompt="When is invoice 8841 due?",
        model=VISION_MODELS[provider][0],
    )

    assert completed(events), events
    (request,) = generations(emulator)
    (image,) = request["images"]
    assert image["mime"] == sent_mime
    if sent_mime == attached_mime:
        assert received(image) == data  # passed as is
    else:
        assert received(image)[:8] == b"\x89PNG\r\n\x1a\n" and size_of(received(image)) == size_of(data)
    # Read by OCR too: the document is the chat's, with the invoice's text, and its excerpt reached the model.
    document = await Document.objects.aget(chat_id=events[1]["chatId"])
    assert (document.kind, document.mime, document.status) == ("image", attached_mime, "ready")
    assert excerpts_reached_the_model(request, "8841")


def test_an_animated_webp_becomes_a_png_of_its_first_frame_and_a_still_one_stays_webp():
    animated = check_upload("anim.webp", make_multiframe_image(["First frame", "Second frame"], "WEBP"))
    still = check_upload("still.webp", make_image("Still", "WEBP"))

    first_frame = vision.prepare_image(animated)
    as_is = vision.prepare_image(still)

    assert first_frame["mime"] == "image/png"
    with Image.open(io.BytesIO(first_frame["data"])) as image:
        assert getattr(image, "n_frames", 1) == 1
    assert as_is == {"type": "image", "mime": "image/webp", "data": still.data}


def test_a_large_webp_is_scaled_down():
    wide = check_upload("wide.webp", make_image("A very wide scan", "WEBP", width=3000))

    part = vision.prepare_image(wide)

    assert max(size_of(part["data"])) == vision.MAX_SIDE


def test_the_emulator_refuses_what_each_provider_refuses():
    gif = make_image("x", "GIF")
    png = make_image("x")
    encoded = base64.b64encode(gif).decode()

    with pytest.raises(BadImage, match="gemini does not accept images of type image/gif"):
        images_in("gemini", [{"parts": [{"inlineData": {"mimeType": "image/gif", "data": encoded}}]}])
    with pytest.raises(BadImage, match="not image/webp"):
        images_in("anthropic", [{"content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/webp", "data": base64.b64encode(png).decode()}}]}])
    (accepted,) = images_in("openai", [{"content": [
        {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{encoded}"}}]}])
    assert accepted["mime"] == "image/gif"


# --- the OpenAI-compatible endpoint --------------------------------------------------------------------------------


def _v1_body(model: str, url: str) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe it"}, {"type": "image_url", "image_url": {"url": url}}]}]})


@transactional
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_v1_webp_data_url_reaches_each_provider_as_webp(emulator, vision_models, owner_key, provider):  # noqa: F811
    webp = make_image(INVOICE, "WEBP")
    url = "data:image/webp;base64," + base64.b64encode(webp).decode()

    response = await ServerAsyncClient().post(
        "/v1/chat/completions", _v1_body(VISION_MODELS[provider][0], url), content_type="application/json",
        headers=bearer(owner_key),
    )

    assert response.status_code == 200, response.content
    (request,) = generations(emulator)
    (image,) = request["images"]
    assert (image["mime"], received(image)) == ("image/webp", webp)


@transactional
async def test_a_v1_remote_webp_url_is_still_refused_and_never_fetched(emulator, vision_models, owner_key):  # noqa: F811
    response = await ServerAsyncClient().post(
        "/v1/chat/completions", _v1_body("vision-gpt", "http://127.0.0.1:9/photo.webp"),
        content_type="application/json", headers=bearer(owner_key),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "remote_image_url"
    assert generations(emulator) == []


@transactional
async def test_a_v1_data_url_that_says_webp_but_holds_no_image_is_refused(emulator, vision_models, owner_key):  # noqa: F811
    url = "data:image/webp;base64," + base64.b64encode(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32).decode()

    response = await ServerAsyncClient().post(
        "/v1/chat/completions", _v1_body("vision-gpt", url), content_type="application/json",
        headers=bearer(owner_key),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "corrupt_file"
    assert "The image is damaged" in response.json()["error"]["message"]
    assert generations(emulator) == []
