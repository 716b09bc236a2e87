"""Images as input in a real browser (headless Chromium) against a real daphne server whose provider is the provider
emulator: with an image attached, the composer says when the chosen model cannot see images (and not when it can),
and the image sent to a model that sees images reaches the provider as an image part."""

import base64

import pytest

from testsupport.browser import EMULATOR_MODEL, new_chat, saved_login, wait_until_finished
from testsupport.files import make_image

pytestmark = pytest.mark.browser

EMAIL = "vision-browser@example.com"
PASSWORD = "a long vision-test password"
VISION_MODEL = "vision-gpt"
NOTE = "This model can't see images; it will read the image's text (OCR)."
CREATE_VISION_MODEL = (
    "from chat.models import AIModel; AIModel.objects.update_or_create(name='vision-gpt', defaults=dict("
    "full_name='gpt-4o-mini', provider='openai', context_limit=128000, vision=True))"
)


@pytest.fixture(scope="module")
def storage_state(browser, emulator_server, tmp_path_factory):
    emulator_server.create_user(EMAIL, PASSWORD)
    emulator_server.manage("shell", "-c", CREATE_VISION_MODEL)
    return saved_login(browser, emulator_server.url, EMAIL, PASSWORD, tmp_path_factory.mktemp("state") / "state.json")


def test_the_note_follows_the_model_and_the_image_reaches_the_provider_as_an_image(tab, provider_emulator, tmp_path):
    from playwright.sync_api import expect

    page = tab.page
    provider_emulator.configure(reply="A receipt for 8841.")
    png = make_image("Receipt 8841")
    picture = tmp_path / "receipt.png"
    picture.write_bytes(png)
    new_chat(page)
    note = page.locator("#vision-note")

    page.select_option("#model", EMULATOR_MODEL)
    expect(note).to_be_hidden()  # nothing attached yet
    page.set_input_files("#file-picker", str(picture))
    expect(page.locator('#attachments .chip[data-kind="image"]')).to_have_count(1)
    expect(note).to_be_visible()
    expect(note).to_have_text(NOTE)
    page.select_option("#model", VISION_MODEL)
    expect(note).to_be_hidden()

    provider_emulator.reset()
    provider_emulator.configure(reply="A receipt for 8841.")
    page.fill("#prompt", "What is this?")
    page.press("#prompt", "Enter")
    turn = page.locator("#messages article.turn").last
    wait_until_finished(turn)

    expect(turn.locator(".answer")).to_contain_text("A receipt for 8841.")
    answers = [r for r in provider_emulator.requests if r["path"].endswith("/chat/completions")]
    assert [r["model"] for r in answers] == ["gpt-4o-mini"]
    (image,) = answers[0]["images"]
    assert (image["mime"], base64.b64decode(image["data"])) == ("image/png", png)
    expect(note).to_be_hidden()  # the chips went with the message
