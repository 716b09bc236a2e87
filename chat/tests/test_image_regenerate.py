"""A regenerated or edited image turn is the same turn asked again: a model that sees images is sent the same images
as the original turn (read back from the chat's documents, not re-read or charged again), a chain of regenerates
keeps them, and the new version lists the same attachments. Only the chat's owner may regenerate it."""

import pytest

from chat.models import ChatQuery
from chat.tests.test_image_input import (
    INVOICE,
    completed,
    excerpts_reached_the_model,
    generations,
    received,
    turn,
    upload,
    vision_models,  # noqa: F401 - a fixture
)
from rag.models import Document
from testsupport.files import make_image
from testsupport.http import ServerAsyncClient, bearer, parse_sse, read_streaming

transactional = pytest.mark.django_db(transaction=True)


async def version(key, chat_id, query_id, action="regenerate", **fields) -> list[dict]:
    response = await ServerAsyncClient().post(
        f"/api/v1/chat/{chat_id}/queries/{query_id}/{action}/stream", fields, content_type="application/json",
        headers=bearer(key),
    )
    assert response.status_code == 200, response.content
    return parse_sse(await read_streaming(response))


async def first_turn(key, files, model="vision-claude", prompt="When is invoice 8841 due?"):
    events = await turn(key, files=files, prompt=prompt, model=model)
    assert completed(events), events
    return events[1]["chatId"], events[1]["queryId"]


@transactional
@pytest.mark.parametrize("model", ["vision-gpt", "vision-claude", "vision-gemini"])
async def test_a_regenerated_image_turn_sends_the_same_images_again(
    emulator, vision_models, owner_key, model, settings  # noqa: F811
):
    settings.FREE_TIER_LIMITS = {**settings.FREE_TIER_LIMITS, "files_per_request": 3}
    png, webp = make_image(INVOICE), make_image("Second page: paid", "WEBP")
    chat_id, query_id = await first_turn(
        owner_key, [upload(png), upload(webp, "page2.webp", "image/webp")], model=model
    )
    documents_before = await Document.objects.filter(chat_id=chat_id).acount()

    events = await version(owner_key, chat_id, query_id)

    assert completed(events), events
    original, regenerated = generations(emulator)
    assert [(i["mime"], received(i)) for i in regenerated["images"]] == [
        (i["mime"], received(i)) for i in original["images"]
    ] == [("image/png", png), ("image/webp", webp)]
    assert regenerated["messages"][-1]["content"].endswith("When is invoice 8841 due?")
    assert excerpts_reached_the_model(regenerated, "8841")  # the OCR text is still retrieved
    # Not read into the chat again, and not charged again: the new version's statuses say nothing of reading.
    assert await Document.objects.filter(chat_id=chat_id).acount() == documents_before
    assert not any("Reading invoice.png" in e.get("message", "") for e in events)
    new = await ChatQuery.objects.aget(pk=events[1]["queryId"])
    assert [f["name"] for f in new.metadata["files"]] == ["invoice.png", "page2.webp"]


@transactional
async def test_an_edited_image_turn_keeps_its_images(emulator, vision_models, owner_key):  # noqa: F811
    png = make_image(INVOICE)
    chat_id, query_id = await first_turn(owner_key, [upload(png)], model="vision-gpt")

    events = await version(owner_key, chat_id, query_id, "edit", prompt="Who issued invoice 8841?")

    assert completed(events), events
    _, edited = generations(emulator)
    assert [received(i) for i in edited["images"]] == [png]
    assert edited["messages"][-1]["content"].endswith("Who issued invoice 8841?")


@transactional
async def test_a_photo_without_text_is_shown_again_and_a_chain_of_regenerates_keeps_it(
    emulator, vision_models, owner_key  # noqa: F811
):
    photo = make_image("")
    chat_id, query_id = await first_turn(owner_key, [upload(photo, "photo.png")], prompt="What colour is it?")
    document = await Document.objects.aget(chat_id=chat_id)
    assert document.status == "failed" and document.file.name  # no text, but its original is kept

    second = await version(owner_key, chat_id, query_id)
    third = await version(owner_key, chat_id, second[1]["queryId"])

    assert completed(second) and completed(third)
    assert [[received(i) for i in r["images"]] for r in generations(emulator)] == [[photo]] * 3


@transactional
async def test_a_regenerate_for_a_model_that_cannot_see_images_sends_text_then_a_vision_one_the_image(
    emulator, vision_models, owner_key  # noqa: F811
):
    png = make_image(INVOICE)
    chat_id, query_id = await first_turn(owner_key, [upload(png)])

    text_only = await version(owner_key, chat_id, query_id, model="gpt-3.5-turbo")
    again = await version(owner_key, chat_id, text_only[1]["queryId"], model="vision-gemini")
    assert completed(text_only) and completed(again)

    _, blind, seeing = generations(emulator)
    assert blind["images"] == [] and excerpts_reached_the_model(blind, "8841")
    assert [received(i) for i in seeing["images"]] == [png]


@transactional
async def test_a_turn_saved_before_sha256_was_kept_is_matched_by_name_and_size(emulator, vision_models, owner_key):  # noqa: F811
    png = make_image(INVOICE)
    chat_id, query_id = await first_turn(owner_key, [upload(png)])
    query = await ChatQuery.objects.aget(pk=query_id)
    legacy = [{key: value for key, value in f.items() if key != "sha256"} for f in query.metadata["files"]]
    await ChatQuery.objects.filter(pk=query_id).aupdate(metadata={**query.metadata, "files": legacy})

    await version(owner_key, chat_id, query_id)

    assert [received(i) for i in generations(emulator)[-1]["images"]] == [png]


@transactional
async def test_an_image_whose_document_was_deleted_is_left_out_and_the_turn_still_answers(
    emulator, vision_models, owner_key  # noqa: F811
):
    chat_id, query_id = await first_turn(owner_key, [upload(make_image(INVOICE))])
    await Document.objects.filter(chat_id=chat_id).adelete()

    events = await version(owner_key, chat_id, query_id)

    assert completed(events), events
    assert generations(emulator)[-1]["images"] == []


@transactional
async def test_only_the_owner_can_regenerate_an_image_turn(emulator, vision_models, owner_key, other_key):  # noqa: F811
    chat_id, query_id = await first_turn(owner_key, [upload(make_image(INVOICE))])
    path = f"/api/v1/chat/{chat_id}/queries/{query_id}/regenerate/stream"

    other = await ServerAsyncClient().post(path, {}, content_type="application/json", headers=bearer(other_key))
    anonymous = await ServerAsyncClient().post(path, {}, content_type="application/json")

    assert other.status_code == 404
    assert anonymous.status_code == 401
    assert len(generations(emulator)) == 1  # neither reached the provider
