"""Images as input: an image attached to a turn for a model that sees images reaches the provider as an image, in
each provider's own wire format through its real SDK (the emulator decodes and records what it received), and is
read by OCR for retrieval too; a model that cannot see images (or a fallback that cannot) gets text only."""

import base64
import io
import json
import random

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from PIL import Image

from chat import vision
from chat.grounding import Grounding
from chat.models import AIModel, ChatQuery
from chat.pipeline import History, TurnMessages
from chat.providers.content import image_part, text_of, text_only
from core.tokens import IMAGE_TOKENS, MESSAGE_OVERHEAD_TOKENS, estimate_message_tokens, estimate_tokens
from rag.files import check_upload
from rag.models import Document
from testsupport.emulator import images_in
from testsupport.files import make_image
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

transactional = pytest.mark.django_db(transaction=True)

INVOICE = "Invoice number 8841 is due on Friday"
ANSWER_PATHS = ("/chat/completions", "/messages", ":generateContent", ":streamGenerateContent")
# One model that sees images per provider, besides the seeded ones (not pro, so any user may pick them).
VISION_MODELS = {
    "openai": ("vision-gpt", "gpt-4o-mini"),
    "anthropic": ("vision-claude", "claude-3-5-haiku-20241022"),
    "gemini": ("vision-gemini", "gemini-2.0-flash"),
}


@pytest.fixture
def vision_models(db, settings):
    settings.CHAT_NAMING = False  # a chat's name would be asked of a model through the emulator too
    for provider, (name, full_name) in VISION_MODELS.items():
        AIModel.objects.update_or_create(
            name=name,
            defaults={"full_name": full_name, "provider": provider, "context_limit": 128_000, "vision": True},
        )


async def turn(key, files=(), path="/api/v1/chat/stream", **fields) -> list[dict]:
    client = ServerAsyncClient()
    if files:
        response = await client.post(path, {**fields, "files": list(files)}, headers=bearer(key))
    else:
        response = await client.post(path, fields, content_type="application/json", headers=bearer(key))
    assert response.status_code == 200, response.content
    return parse_sse(await read_streaming(response))


def upload(data: bytes, name="invoice.png", mime="image/png"):
    return SimpleUploadedFile(name, data, content_type=mime)


def generations(emulator) -> list[dict]:
    """The emulator's answer requests (not the embeddings retrieval asks for), failed ones included."""
    return [r for r in emulator.requests if r["path"].endswith(ANSWER_PATHS)]


def excerpts_reached_the_model(request: dict, text: str) -> bool:
    """The file excerpts, with `text` in them, were in the messages or (Anthropic, Gemini) the system text."""
    texts = [m["content"] for m in request["messages"]] + [request["system"] or ""]
    return any(text in t and "<file_excerpts>" in t for t in texts)


def received(image: dict) -> bytes:
    return base64.b64decode(image["data"])


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def completed(events) -> bool:
    return any(e["type"] == "complete" for e in events)


def statuses(events) -> list[str]:
    return [e["message"] for e in events if e["type"] == "status"]


# --- each provider, through its real SDK ------------------------------------------------------------------------


@transactional
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_an_image_reaches_each_vision_provider_as_an_image_and_retrieval_as_ocr_text(
    emulator, vision_models, owner_key, provider
):
    name, full_name = VISION_MODELS[provider]
    png = make_image(INVOICE)

    events = await turn(owner_key, files=[upload(png)], prompt="When is invoice 8841 due?", model=name)

    assert completed(events), events
    (request,) = generations(emulator)
    assert request["api"] == provider and request["model"] == full_name
    (image,) = request["images"]
    assert image["mime"] == "image/png"
    assert received(image) == png  # the very bytes attached: a PNG that fits is passed as is
    assert image["message"] == len(request["body"].get("messages", request["body"].get("contents"))) - 1
    # The same message carries the prompt's text (a part beside the image).
    assert request["messages"][-1]["content"].endswith("When is invoice 8841 due?")
    # And the image was read by OCR into the chat's files, whose excerpt reached the model as text too.
    document = await Document.objects.aget(chat_id=events[1]["chatId"])
    assert (document.kind, document.status) == ("image", "ready")
    assert excerpts_reached_the_model(request, "8841")


@transactional
async def test_openai_gets_an_image_url_part_with_a_data_url(emulator, vision_models, owner_key):
    png = make_image(INVOICE)

    await turn(owner_key, files=[upload(png)], prompt="Read it", model="vision-gpt")

    (request,) = generations(emulator)
    content = request["body"]["messages"][-1]["content"]
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert content[0] == {"type": "image_url", "image_url": {"url": data_url}}
    assert content[1] == {"type": "text", "text": "Read it"}


@transactional
async def test_anthropic_gets_a_base64_image_block_and_gemini_inline_data(emulator, vision_models, owner_key):
    png = make_image(INVOICE)

    await turn(owner_key, files=[upload(png)], prompt="Read it", model="vision-claude")
    await turn(owner_key, files=[upload(png)], prompt="Read it", model="vision-gemini")

    anthropic, gemini = generations(emulator)
    block = anthropic["body"]["messages"][-1]["content"][0]
    assert block["type"] == "image" and block["source"]["type"] == "base64"
    assert block["source"]["media_type"] == "image/png"
    assert base64.b64decode(block["source"]["data"]) == png
    inline = gemini["body"]["contents"][-1]["parts"][0]["inlineData"]
    assert inline.get("mimeType", inline.get("mime_type")) == "image/png"  # the SDK sends it in snake case
    assert received(gemini["images"][0]) == png


@transactional
async def test_a_bmp_becomes_a_png_and_a_large_image_is_scaled_down(emulator, vision_models, owner_key):
    bmp = make_image("A bitmap scan", fmt="BMP")
    wide = make_image("A very wide scan", width=3000)

    await turn(owner_key, files=[upload(bmp, "scan.bmp", "image/bmp")], prompt="What is it?", model="vision-claude")
    await turn(owner_key, files=[upload(wide, "wide.png")], prompt="And this?", model="vision-claude")

    (first,), (second,) = (request["images"] for request in generations(emulator))
    assert first["mime"] == "image/png" and size_of(received(first)) == size_of(bmp)
    assert received(first) != bmp
    width, height = size_of(wide)
    assert width == 3000
    assert size_of(received(second)) == (vision.MAX_SIDE, round(height * vision.MAX_SIDE / width))


@transactional
async def test_an_image_without_text_is_still_seen_by_a_vision_model(emulator, vision_models, owner_key):
    blank = make_image("")

    events = await turn(owner_key, files=[upload(blank, "photo.png")], prompt="What colour is it?", model="vision-gpt")

    (request,) = generations(emulator)
    assert received(request["images"][0]) == blank
    assert "photo.png has no text to search; the model sees the image itself." in statuses(events)


# --- models that cannot see images ----------------------------------------------------------------------------------


@transactional
async def test_a_model_that_cannot_see_images_gets_text_and_the_ocr_text(emulator, owner_key, settings):
    settings.CHAT_NAMING = False  # the name would be asked of gpt-3.5-turbo through the emulator, racing the check
    png = make_image(INVOICE)

    events = await turn(owner_key, files=[upload(png)], prompt="When is invoice 8841 due?", model="gpt-3.5-turbo")

    assert completed(events), events
    (request,) = generations(emulator)
    assert request["images"] == []
    assert all(isinstance(m["content"], str) for m in request["body"]["messages"])
    assert request["body"]["messages"][-1] == {"role": "user", "content": "When is invoice 8841 due?"}
    assert excerpts_reached_the_model(request, "8841")


@transactional
async def test_a_fallback_that_cannot_see_images_gets_text_only(emulator, vision_models, owner_key):
    png = make_image(INVOICE)
    emulator.configure(fault={"kind": "http_503", "match": ":streamGenerateContent"})

    with override_settings(FALLBACK_MODELS=["gpt-3.5-turbo"]):
        events = await turn(owner_key, files=[upload(png)], prompt="Due when?", model="vision-gemini")

    assert completed(events), events
    *failed, answered = generations(emulator)
    # The failed requests were refused before the emulator read them: what they carried is in their bodies.
    assert failed and all(len(images_in("gemini", r["body"]["contents"])) == 1 for r in failed)
    assert (answered["model"], answered["images"]) == ("gpt-3.5-turbo", [])
    assert answered["body"]["messages"][-1] == {"role": "user", "content": "Due when?"}
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert saved.model == "gpt-3.5-turbo"


@transactional
async def test_earlier_turns_images_are_not_sent_again(emulator, vision_models, owner_key):
    first = await turn(owner_key, files=[upload(make_image(INVOICE))], prompt="Read it", model="vision-claude")

    await turn(owner_key, path=f"/api/v1/chat/{first[1]['chatId']}/stream", prompt="And the due day?",
               model="vision-claude")

    _, second = generations(emulator)
    assert second["images"] == []
    assert all(isinstance(m["content"], str) for m in second["body"]["messages"])
    # Its text still reaches the model: the image's OCR text is in the chat's files.
    assert excerpts_reached_the_model(second, "8841")


# --- the catalog --------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_catalog_says_which_models_see_images(client):
    seen = dict(AIModel.objects.values_list("name", "vision"))
    assert seen["Claude 3.5 Sonnet"] is True and seen["gemini-1.5-flash"] is True
    assert not any(seen[name] for name in ("gpt-3.5-turbo", "smollm2-135m", "llama-3.3-70b-versatile", "dall-e-3"))


@transactional
async def test_the_models_api_exposes_vision(owner_key):
    response = await ServerAsyncClient().get("/api/v1/chat/models", headers=bearer(owner_key))

    models = {m["name"]: m for m in response.json()["models"]}
    assert models["Claude 3.5 Sonnet"]["vision"] is True
    assert models["gpt-3.5-turbo"]["vision"] is False


# --- the composer -------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_composer_marks_which_models_see_images_and_holds_the_ocr_note(owner_client):
    html = owner_client.get("/chat/").content.decode()

    assert 'value="Claude 3.5 Sonnet" data-vision="true"' in html
    assert 'value="gpt-3.5-turbo" data-vision="false"' in html
    assert '<p id="vision-note" class="muted small vision-note" role="status" hidden>' in html
    assert "This model can&#x27;t see images; it will read the image&#x27;s text (OCR)." in html or (
        "This model can't see images; it will read the image's text (OCR)." in html
    )
    assert "js/vision.js" in html


@pytest.mark.django_db
def test_staged_chips_say_their_kind_for_the_note(owner_client):
    response = owner_client.post("/chat/attachments/", {"files": [upload(make_image(INVOICE))]})

    assert response.status_code == 200, response.content
    assert 'data-kind="image"' in response.content.decode()


# --- the parts themselves -----------------------------------------------------------------------------------------


def test_image_parts_cost_a_fixed_estimate_and_text_only_drops_them():
    message = {"role": "user", "content": [image_part("image/png", b"x"), {"type": "text", "text": "abcdef"}]}

    assert estimate_message_tokens(message) == IMAGE_TOKENS + estimate_tokens("abcdef") + MESSAGE_OVERHEAD_TOKENS
    assert text_only([message]) == [{"role": "user", "content": "abcdef"}]
    assert text_of(message["content"]) == "abcdef"


def test_turn_messages_send_the_images_to_a_vision_model_only():
    part = image_part("image/png", b"png bytes")
    messages = TurnMessages((), Grounding(None), History(), {"role": "user", "content": "What is it?"}, (part,))

    with_images, _ = messages.for_budget(10_000, vision=True)
    text, _ = messages.for_budget(10_000, vision=False)

    assert with_images[-1]["content"] == [part, {"type": "text", "text": "What is it?"}]
    assert text[-1] == {"role": "user", "content": "What is it?"}


def test_a_rotated_jpeg_is_turned_upright_and_a_tiff_becomes_png():
    photo = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)

    upright = vision.prepare_image(check_upload("photo.jpg", buffer.getvalue()))
    tiff = vision.prepare_image(check_upload("scan.tif", make_image("A TIFF scan", fmt="TIFF")))

    assert upright["mime"] == "image/png" and size_of(upright["data"]) == (20, 40)
    assert tiff["mime"] == "image/png" and size_of(tiff["data"]) == size_of(make_image("A TIFF scan", fmt="TIFF"))


# --- the OpenAI-compatible endpoint, through to a provider ----------------------------------------------------------


@transactional
async def test_a_v1_data_url_over_a_megabyte_reaches_the_provider_as_an_image(emulator, vision_models, owner_key):
    noise = Image.frombytes("RGB", (640, 560), random.Random(7).randbytes(640 * 560 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    png = buffer.getvalue()
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    body = {"model": "vision-claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe it"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    payload = json.dumps(body)
    assert len(payload) > 1_000_000  # more than a body without images may be

    response = await ServerAsyncClient().post(
        "/v1/chat/completions", payload, content_type="application/json", headers=bearer(owner_key)
    )

    assert response.status_code == 200, response.content
    (request,) = generations(emulator)
    (image,) = request["images"]
    assert (image["mime"], received(image)) == ("image/png", png)
