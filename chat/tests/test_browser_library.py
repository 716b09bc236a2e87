"""The library in a real browser (headless Chromium via Playwright, under the site's real Content-Security-Policy)
against a real daphne whose only provider is the provider emulator: folders (create, file a chat from its Organize
menu with the keyboard, rename, delete with the chat kept), a JSON export imported back, an assistant whose document
the answer cites, an image sent to a vision model as an image part, and a temporary chat that is gone when its tab
closes. (Search: test_browser_search.py; the services behind these: test_library.py, test_portability.py,
test_assistants.py, test_vision.py.)"""

import json

import pytest

from testsupport.browser import CHAT_URL, EMULATOR_MODEL, ask, new_chat, open_tab, saved_login, wait_until_finished
from testsupport.files import make_text_pdf
from testsupport.png import solid_png

pytestmark = pytest.mark.browser

EMAIL = "library-browser@example.com"
PASSWORD = "a long library-test password"
VISION_MODEL = "gpt-4o-mini"  # an OpenAI vision model: the emulator server points only OpenAI at loopback

# A vision-capable OpenAI model in the server's catalog (the seed's vision models are Anthropic's and Gemini's, which
# the emulator server does not point at loopback).
_ADD_VISION_MODEL = f"""
from chat.models import AIModel
AIModel.objects.update_or_create(name={VISION_MODEL!r}, defaults=dict(
    full_name={VISION_MODEL!r}, provider="openai", category="Text Generation", context_limit=128000, vision=True))
"""


@pytest.fixture(scope="module")
def account(browser, emulator_server, tmp_path_factory):
    """(storage state of a logged-in session, an API key) for the module's one user."""
    key = emulator_server.create_user_with_key(EMAIL, PASSWORD)
    state = saved_login(browser, emulator_server.url, EMAIL, PASSWORD, tmp_path_factory.mktemp("state") / "state.json")
    return state, key


@pytest.fixture
def tab(browser, emulator_server, account):
    tab = open_tab(browser, emulator_server.url, account[0])
    yield tab
    tab.close()


def main_list_links(page):
    """The sidebar's chats that are in no folder (a folder's chats are inside its <details>)."""
    return page.locator("#chat-list > a.chat-link")


@pytest.fixture
def confirming_tab(browser, emulator_server, account):
    """A tab that answers "OK" to every confirmation (the folder's "Delete?")."""
    tab = open_tab(browser, emulator_server.url, account[0], dismiss_dialogs=False)
    tab.page.on("dialog", lambda dialog: dialog.accept())
    yield tab
    tab.close()


def test_a_chat_is_filed_in_a_folder_from_its_menu_and_kept_when_the_folder_goes(confirming_tab, provider_emulator):
    from playwright.sync_api import expect

    page = confirming_tab.page
    provider_emulator.configure(reply="Start with the foundations.", tokens_per_second=200)
    new_chat(page)
    wait_until_finished(ask(page, "Plan the garden shed"))
    expect(main_list_links(page).filter(has_text="Plan the garden shed")).to_have_count(1)

    page.fill(".folder-new input[name=name]", "Garden")
    page.get_by_role("button", name="+ Folder").click()
    folder = page.locator("details.folder").filter(has=page.locator(".folder-title", has_text="Garden"))
    expect(folder).to_have_count(1)
    expect(folder.locator(".folder-count")).to_have_text("0")

    # The Organize menu, from the keyboard: open it, pick the folder, press Move. Its panel loads twice (the new
    # folder's "folders-changed", then opening it): wait for the second, or it replaces the panel mid-choice.
    expect(page.locator("#move-folder option", has_text="Garden")).to_have_count(1)  # loaded, still closed
    page.evaluate("document.getElementById('chat-menu-panel').dataset.stale = 'yes'")
    page.locator("#chat-menu > summary").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#chat-menu-panel:not([data-stale])")).to_have_count(1)
    select = page.locator("#move-folder")
    expect(select.locator("option", has_text="Garden")).to_have_count(1)
    select.focus()
    select.select_option(label="Garden")
    page.locator("#move-chat").focus()
    page.keyboard.press("Enter")

    expect(folder.locator(".folder-count")).to_have_text("1")  # the sidebar was redrawn
    expect(main_list_links(page).filter(has_text="Plan the garden shed")).to_have_count(0)
    folder.locator("summary.folder-name").click()
    expect(folder.locator(".folder-chats a.chat-link")).to_have_text(["Plan the garden shed"])

    folder.locator(".folder-menu > summary").click()
    folder.locator(".folder-rename input[name=name]").fill("Garden projects")
    folder.get_by_role("button", name="Rename").click()
    renamed_folder = page.locator("details.folder").filter(
        has=page.locator(".folder-title", has_text="Garden projects")
    )
    expect(renamed_folder).to_have_count(1)
    renamed_folder.locator(".folder-menu > summary").click()
    renamed_folder.get_by_role("button", name="Delete folder").click()
    expect(page.locator("details.folder .folder-title", has_text="Garden")).to_have_count(0)
    expect(main_list_links(page).filter(has_text="Plan the garden shed")).to_have_count(1)


def test_a_json_export_imports_back_as_the_same_conversation(tab, provider_emulator, tmp_path):
    from playwright.sync_api import expect

    page = tab.page
    turns = [("Name a red fruit", "A strawberry."), ("And a yellow one?", "A banana.")]
    new_chat(page)
    for prompt, reply in turns:
        provider_emulator.configure(reply=reply, tokens_per_second=200)
        wait_until_finished(ask(page, prompt))
    original_url = page.url

    with page.expect_download() as download_info:
        page.locator("#export-json").click()
    download = download_info.value
    exported = tmp_path / (download.suggested_filename or "chat.json")
    download.save_as(exported)
    document = json.loads(exported.read_text())
    assert "A banana." in json.dumps(document)  # the file holds the answers, not only the prompts

    page.goto("/accounts/")
    page.set_input_files("#import-file", str(exported))
    page.locator("#import-form").get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-done")).to_contain_text("Imported 1 chat (2 turns)")
    page.locator("#imported-chats a").first.click()
    expect(page).to_have_url(CHAT_URL)
    assert page.url != original_url  # a new chat, not the exported one
    expect(page.locator("#messages article.turn .prompt")).to_have_text([p for p, _ in turns])
    expect(page.locator("#messages article.turn .answer")).to_have_text([a for _, a in turns])


def test_a_chat_started_from_an_assistant_cites_its_document(tab, provider_emulator, tmp_path):
    from playwright.sync_api import expect

    page = tab.page
    pdf = tmp_path / "handbook.pdf"
    pdf.write_bytes(make_text_pdf(["Staff handbook. The fire assembly point is the north car park by the oak tree."]))
    page.goto("/chat/assistants/")
    page.fill("#assistant-name", "Handbook helper")
    page.fill("#assistant-system-prompt", "Answer from the staff handbook only.")
    page.select_option("#assistant-model", EMULATOR_MODEL)
    page.get_by_role("button", name="Save assistant").click()
    expect(page.locator("#assistant-title")).to_have_text("Handbook helper")
    page.set_input_files("#assistant-files", str(pdf))
    page.get_by_role("button", name="Upload and read").click()
    expect(page.locator("#assistant-documents")).to_contain_text("handbook.pdf")
    expect(page.locator("#assistant-documents .document-ready")).to_contain_text("1 page")

    page.locator("#assistant-start").get_by_role("button", name="Start chat").click()
    expect(page).to_have_url(CHAT_URL)
    expect(page.locator("#assistant-chat-documents")).to_contain_text("handbook.pdf")
    provider_emulator.configure(reply="Meet at the north car park by the oak tree [1].", tokens_per_second=200)
    requests_before = len(provider_emulator.requests)
    turn = ask(page, "Where is the fire assembly point?")
    wait_until_finished(turn)
    query_id = turn.get_attribute("id").removeprefix("turn-")
    citation = turn.locator(".answer a.cite")
    expect(citation).to_have_text("1")
    expect(citation).to_have_attribute("href", f"#source-{query_id}-1")
    source = turn.locator(f"#source-{query_id}-1")
    expect(source).to_contain_text("handbook.pdf, page 1")
    href = source.get_by_role("link", name="handbook.pdf, page 1").get_attribute("href")
    stored = page.request.get(href.split("#")[0])
    assert stored.status == 200 and stored.body() == pdf.read_bytes()

    # The model was sent the assistant's system prompt and the document's text.
    chats = [r for r in provider_emulator.requests[requests_before:] if r.get("messages")]
    sent = json.dumps(chats[-1]["messages"])
    assert "Answer from the staff handbook only." in sent
    assert "north car park" in sent


def test_an_assistants_document_is_read_in_the_background_then_deleted_from_its_page(tab, tmp_path):
    from playwright.sync_api import expect

    page = tab.page
    pdf = tmp_path / "visitors.pdf"
    pdf.write_bytes(make_text_pdf(["Visitors sign in at the front desk.", "Badges are returned on leaving."]))
    page.goto("/chat/assistants/")
    page.fill("#assistant-name", "Front desk")
    page.get_by_role("button", name="Save assistant").click()
    expect(page.locator("#assistant-title")).to_have_text("Front desk")
    page.set_input_files("#assistant-files", str(pdf))
    page.get_by_role("button", name="Upload and read").click()
    # The upload answers at once; the list follows the reading by itself (no reload) until the document is ready.
    expect(page.locator("#assistant-documents .document-ready")).to_contain_text("visitors.pdf 2 pages")
    expect(page.locator("#assistant-documents")).not_to_have_attribute("hx-trigger", "every 2s")

    page.get_by_role("button", name="Delete visitors.pdf").click()
    expect(page.locator("#assistant-documents")).to_contain_text("No documents yet.")
    expect(page.locator("#assistant-documents .document")).to_have_count(0)


def test_an_image_goes_to_a_vision_model_as_an_image_part(tab, provider_emulator, emulator_server):
    from playwright.sync_api import expect

    emulator_server.manage("shell", "-c", _ADD_VISION_MODEL)
    page = tab.page
    provider_emulator.configure(reply="A red square.", tokens_per_second=200)
    new_chat(page)
    page.select_option("#model", VISION_MODEL)
    png = solid_png(64, 64, (200, 30, 30))
    page.set_input_files("#file-picker", files=[{"name": "red.png", "mimeType": "image/png", "buffer": png}])
    expect(page.locator("#attachments .chip")).to_contain_text("red.png")
    expect(page.locator("#vision-note")).to_be_hidden()  # this model sees images: no OCR-only warning
    requests_before = len(provider_emulator.requests)
    wait_until_finished(ask(page, "What colour is this picture?"))
    expect(page.locator("#messages article.turn .answer").last).to_have_text("A red square.")

    chats = [r for r in provider_emulator.requests[requests_before:] if r.get("model") == VISION_MODEL]
    assert chats, [r.get("model") for r in provider_emulator.requests[requests_before:]]
    images = chats[-1]["images"]
    assert len(images) == 1, images
    assert images[0]["mime"].startswith("image/") and images[0]["bytes"] > 0


def _stored_turns_with_prompt(server, prompt: str) -> int:
    out = server.manage(
        "shell", "-c", f"from chat.models import ChatQuery; print(ChatQuery.objects.filter(prompt={prompt!r}).count())"
    )
    return int(out.strip().splitlines()[-1])


def test_a_temporary_chat_is_answered_unlisted_and_gone_when_its_tab_closes(
    browser, emulator_server, account, provider_emulator
):
    from playwright.sync_api import expect

    prompt = "A secret temporary question about otters"
    tab = open_tab(browser, emulator_server.url, account[0])
    page = tab.page
    provider_emulator.configure(reply="Otters hold hands while they sleep.", tokens_per_second=200)
    new_chat(page)
    page.check("#temporary-chat")
    expect(page.locator("#temporary-hint")).to_be_visible()
    turn = ask(page, prompt)
    wait_until_finished(turn)
    expect(turn.locator(".answer")).to_have_text("Otters hold hands while they sleep.")
    expect(page.locator("#temporary-note")).to_contain_text("Temporary chat — not saved")
    expect(page.locator("#chat-list")).not_to_contain_text(prompt)
    listed = page.request.get("/api/v1/chat/user", headers={"Authorization": f"Bearer {account[1]}"})
    assert listed.status == 200 and prompt not in listed.text()
    assert _stored_turns_with_prompt(emulator_server, prompt) == 1  # kept while its tab is open

    tab.close()  # closes the page and its socket
    for _ in range(20):  # bounded: each check is a manage.py run (~1 s)
        if _stored_turns_with_prompt(emulator_server, prompt) == 0:
            break
    else:
        raise AssertionError("the temporary chat was still stored after its tab closed")
