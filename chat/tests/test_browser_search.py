"""Search in a real browser (headless Chromium via Playwright, under the site's real Content-Security-Policy)
against a real daphne whose only provider is the provider emulator: typing in the sidebar's search box shows the
matching chats in place of the list as one types, the matching words marked; a result opens its chat at the matching
turn; Escape clears the search and the list returns; a renamed chat is found by its new title at once. (A result on
a version not shown opens that branch: chat/tests/test_search.py.)"""

import pytest

from testsupport.browser import ask, new_chat, wait_until_finished

pytestmark = pytest.mark.browser

EMAIL = "search-browser@example.com"
PASSWORD = "a long search-test password"


def test_typing_finds_chats_by_their_answers_and_opens_the_matching_turn(tab, provider_emulator):
    from playwright.sync_api import expect

    page = tab.page
    provider_emulator.configure(reply="Octopuses have <b>three</b> hearts.", tokens_per_second=200)
    new_chat(page)
    first = ask(page, "Tell me a sea creature fact")
    wait_until_finished(first)
    provider_emulator.configure(reply="Bananas are berries.", tokens_per_second=200)
    second = ask(page, "And a fruit fact")
    wait_until_finished(second)
    new_chat(page)
    provider_emulator.configure(reply="Nothing about the sea here.", tokens_per_second=200)
    wait_until_finished(ask(page, "Unrelated chat"))
    expect(page.locator("#chat-list .chat-link")).to_have_count(2)

    search = page.locator("#chat-search")
    search.press_sequentially("octop", delay=40)  # as a person types: the last word is a prefix
    results = page.locator("#search-results .search-hit")
    expect(results).to_have_count(1)
    expect(page.locator("#chat-list")).to_be_hidden()
    expect(results.locator(".search-title")).to_have_text("Tell me a sea creature fact")
    expect(results.locator(".search-snippet mark")).to_have_text("Octopuses")
    # The model's HTML is text in the snippet, never markup.
    expect(results.locator(".search-snippet")).to_contain_text("<b>three</b>")
    expect(results.locator(".search-snippet b")).to_have_count(0)

    results.first.click()
    page.wait_for_url("**/chat/*/?query=*")
    turn_id = page.url.split("#turn-")[1]
    expect(page.locator(f"#turn-{turn_id} .prompt")).to_have_text("Tell me a sea creature fact")
    expect(page.locator("#messages article.turn")).to_have_count(2)

    search = page.locator("#chat-search")
    search.fill("zebra")
    expect(page.locator("#search-results")).to_contain_text("No chats match")
    search.press("Escape")
    expect(search).to_have_value("")
    expect(page.locator("#search-results")).to_be_hidden()
    expect(page.locator("#chat-list .chat-link")).to_have_count(2)


def test_a_renamed_chat_is_found_by_its_new_title_at_once(tab, provider_emulator):
    from playwright.sync_api import expect

    page = tab.page
    provider_emulator.configure(reply="Sure.", tokens_per_second=200)
    new_chat(page)
    wait_until_finished(ask(page, "Something to rename"))
    page.locator("#chat-header input[name=title]").fill("Kilimanjaro itinerary")
    page.locator("#chat-header form.rename button[type=submit]").click()
    expect(page.locator("#chat-list")).to_contain_text("Kilimanjaro itinerary")  # the list refreshed: renamed

    page.locator("#chat-search").press_sequentially("kiliman", delay=30)
    hit = page.locator("#search-results .search-hit")
    expect(hit).to_have_count(1)
    expect(hit.locator(".search-title mark")).to_have_text("Kilimanjaro")
