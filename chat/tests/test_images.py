"""Image models: the picture is stored under generation/<user>/<timestamp>-<uuid>.png and downloads back
byte-identical; keys are validated so nothing else in the storage can be reached."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat.models import ChatQuery
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming
from testsupport.png import solid_png
from testsupport.scripted import install_scripted_model, uninstall_scripted_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def painter(scripted):
    provider, model = install_scripted_model(name="painter", provider_name="painter")
    model.category = "Image Generation"
    model.save()
    provider.image_png = solid_png(3, 2, (10, 200, 10))
    yield provider
    uninstall_scripted_model("painter")


async def generate(key, prompt="a green square", model="painter"):
    response = await ServerAsyncClient().post(
        "/api/v1/chat/stream",
        {"prompt": prompt, "model": model},
        content_type="application/json",
        headers=bearer(key),
    )
    return parse_sse(await read_streaming(response))


async def download(url):
    return await sync_to_async(Client().get)(url)


def body(response) -> bytes:
    return b"".join(response.streaming_content)


async def test_an_image_turn_stores_the_png_and_it_downloads_back_identical(
    painter, owner, owner_key, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    events = await generate(owner_key)

    assert "Generating image…" in [e.get("message") for e in events]
    complete = events[-2]
    assert complete["type"] == "complete"
    image = complete["query"]["metadata"]["images"][0]
    assert image["key"].startswith(f"generation/{owner.pk}/") and image["key"].endswith(".png")
    assert (tmp_path / image["key"]).read_bytes() == painter.image_png
    saved = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert saved.metadata["images"] == [image] and saved.response == "A picture of a green square"

    response = await download(image["downloadUrl"])
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert body(response) == painter.image_png
    preview = await download(image["previewUrl"])
    assert preview["Content-Disposition"].startswith("inline;") and preview["Content-Type"] == "image/png"


async def test_images_land_in_s3_and_download_back_byte_identical(painter, owner_key, s3_storage):
    events = await generate(owner_key)

    key = events[-2]["query"]["metadata"]["images"][0]["key"]
    stored = s3_storage.get_object(Bucket=s3_storage.bucket, Key=key)["Body"].read()
    assert stored == painter.image_png
    response = await download(f"/api/v1/public/images/download/{key}")
    assert response.status_code == 200 and body(response) == painter.image_png


@pytest.mark.parametrize(
    "key",
    [
        "generation/1/20260101T000000Z-00000000000000000000000000000000.png",  # well-formed but absent
        "generation/1/../../querynox/settings.py",
        "..%2F..%2Fmanage.py",
        "generation/1/20260101T000000Z-0000.png",
        "generation/x/20260101T000000Z-00000000000000000000000000000000.png",
        "generation/1/20260101T000000Z-00000000000000000000000000000000.txt",
    ],
)
async def test_unknown_or_malformed_keys_are_404(key):
    response = await download(f"/api/v1/public/images/download/{key}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_a_provider_that_returns_no_png_is_an_error_not_a_stored_file(painter, owner_key, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    painter.image_png = b"<html>not an image</html>"

    events = await generate(owner_key)

    assert events[-2]["type"] == "error" and "not a PNG" in events[-2]["message"]
    assert not any(tmp_path.rglob("*.png"))


async def test_the_web_ui_shows_the_image_when_the_turn_completes(painter, owner, settings, tmp_path):
    from chat.fragments import HtmxFramer

    settings.MEDIA_ROOT = tmp_path
    image = {"key": "k", "previewUrl": "/p?inline=1", "downloadUrl": "/d"}
    query = {"chatId": "c", "response": "Here is your image.", "model": "dall-e-3", "metadata": {"images": [image]}}
    event = {"type": "complete", "status": "complete", "query": query}

    frames = await HtmxFramer(owner).frames("q1", event)

    html = "\n".join(frames)
    assert '<div id="images-q1" class="images" hx-swap-oob="outerHTML">' in html
    assert 'src="/p?inline=1"' in html and 'href="/d"' in html


async def test_dall_e_3_through_the_openai_sdk_lands_in_s3_and_downloads_identical(emulator, owner_key, s3_storage):
    events = await generate(owner_key, prompt="a lighthouse at dusk", model="dall-e-3")

    assert events[-2]["type"] == "complete", events[-2]
    (request,) = [r for r in emulator.requests if r["path"].endswith("/images/generations")]
    assert request["model"] == "dall-e-3"
    key = events[-2]["query"]["metadata"]["images"][0]["key"]
    stored = s3_storage.get_object(Bucket=s3_storage.bucket, Key=key)["Body"].read()
    assert stored.startswith(b"\x89PNG")
    response = await download(f"/api/v1/public/images/download/{key}")
    assert body(response) == stored
