"""The web UI's socket fragments for an answer: its text grows as escaped text while it streams, and when it ends
(complete, stopped or failed) the whole answer element is replaced by its rendered Markdown, with the footer (copy,
model, token counts). Model output in any fragment is inert."""

import json

import pytest

from chat.models import ChatQuery
from testsupport.html import Elements
from testsupport.scripted import SCRIPTED_MODEL
from testsupport.sockets import chat_socket, frames_until

pytestmark = pytest.mark.django_db(transaction=True)

HTMX = {"HX-Request": "true"}
MARKDOWN_TOKENS = [
    "# Plan\n\n",
    "- **one**\n",
    "- two\n\n",
    "```python\n",
    "print('<b>')\n",
    "```\n\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n",
    "Area $\\pi r^2$.\n\n",
    "<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))",
]


async def htmx_turn(comm, prompt="Explain", **extra) -> str:
    await comm.send_json_to({"prompt": prompt, "HEADERS": HTMX, "action": "turn", **extra})
    return await comm.receive_from(timeout=5)


async def read_to_the_end(comm) -> list[str]:
    """Frames up to the sidebar refresh that follows the footer (the last fragments of a finished answer)."""
    frames = await frames_until(comm, 'id="answer-foot-', timeout=5)
    frames += await frames_until(comm, 'id="chat-list"', timeout=5)
    return frames


def oob(frames: list[str], element_id: str) -> list[tuple[dict, str]]:
    return [found for frame in frames for found in Elements(frame).find(id=element_id)]


def assert_inert(frames: list[str]):
    for frame in frames:
        for tag, attrs, _ in Elements(frame).elements:
            assert tag not in ("script", "img", "iframe", "svg"), frame
            assert not [name for name in attrs if name.startswith("on")], frame
            assert not attrs.get("href", "").lower().startswith(("javascript", "data")), frame


async def test_streamed_text_is_escaped_and_the_finished_answer_replaces_it_rendered(scripted, owner_key):
    scripted.tokens = MARKDOWN_TOKENS
    comm = chat_socket(owner_key)
    await comm.connect()
    started = await htmx_turn(comm)
    frames = [started, *await read_to_the_end(comm)]
    query = await ChatQuery.objects.aget()

    # While it streamed: each token appended as text to the answer, its markup escaped.
    appended = [f for f in frames if f'hx-swap-oob="beforeend:#answer-{query.pk}"' in f]
    assert len(appended) == len(MARKDOWN_TOKENS)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in appended[-1]
    assert "```python" in "".join(appended)

    # Once complete: the whole answer element, rendered.
    (answer, text) = oob(frames, f"answer-{query.pk}")[-1]  # the first one is in the new turn
    assert answer["hx-swap-oob"] == "outerHTML" and answer["class"] == "answer"
    (answer_frame,) = [f for f in frames if f'id="answer-{query.pk}" class="answer" hx-swap-oob' in f]
    doc = Elements(answer_frame)
    assert [t for _, t in doc.find("h1")] == ["Plan"]
    assert [t for _, t in doc.find("li")] == ["one", "two"]
    assert doc.find("strong")
    assert doc.find("code", class_="language-python") and doc.find("button", class_="copy-code")
    assert [t for _, t in doc.find("td")] == ["1", "2"]
    assert [t for _, t in doc.find(class_="math math-inline")] == ["\\pi r^2"]
    assert "<script>alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1))" in text
    assert_inert(frames)

    # …and its footer: copy the Markdown source, the model and its tokens.
    (foot, foot_text) = oob(frames, f"answer-foot-{query.pk}")[-1]
    assert foot["hx-swap-oob"] == "outerHTML" and "hidden" not in foot
    assert SCRIPTED_MODEL in foot_text
    usage = query.metadata["usage"]
    assert f"{usage['inputTokens']} in · {usage['outputTokens']} out" in foot_text
    (foot_frame,) = [f for f in frames if f'id="answer-foot-{query.pk}" class="answer-foot" hx-swap-oob' in f]
    copy = Elements(foot_frame)
    ((button, _),) = copy.find("button", class_="icon-button copy-answer")
    ((_, source),) = copy.find("template", id=button["data-copy-from"])
    assert source == " ".join(query.response.split())  # the Markdown itself, as text
    assert "&lt;script&gt;" in foot_frame  # escaped inside the template
    await comm.disconnect()


async def test_a_stopped_answer_is_rendered_too(scripted, owner_key):
    scripted.tokens = ["**bold** ", "then ", "more ", "text"]
    scripted.hold_at(2)
    comm = chat_socket(owner_key)
    await comm.connect()
    await htmx_turn(comm)
    await frames_until(comm, 'hx-swap-oob="beforeend:#answer-', timeout=5)
    query = await ChatQuery.objects.aget()
    await frames_until(comm, "then ", timeout=5)

    await comm.send_json_to({"action": "stop", "queryId": str(query.pk)})
    frames = await read_to_the_end(comm)

    assert [t for _, t in oob(frames, f"status-{query.pk}")][-1] == "Stopped."
    (answer_frame,) = [f for f in frames if f'id="answer-{query.pk}" class="answer"' in f]
    assert "<strong>bold</strong>" in answer_frame and "more" not in answer_frame
    await comm.disconnect()


async def test_a_failed_answer_shows_its_partial_text_rendered_with_the_error(scripted, owner_key):
    scripted.tokens = ["Partial *answer* ", "and ", "never this"]
    scripted.fail_after = (2, "the provider broke")
    comm = chat_socket(owner_key)
    await comm.connect()
    await htmx_turn(comm)

    frames = await frames_until(comm, 'id="answer-foot-', timeout=5)
    query = await ChatQuery.objects.aget()

    (status, message) = oob(frames, f"status-{query.pk}")[-1]
    assert status["class"] == "status error" and "the provider broke" in message
    (answer_frame,) = [f for f in frames if f'id="answer-{query.pk}" class="answer"' in f]
    assert "<p>Partial <em>answer</em> and</p>" in answer_frame
    ((foot, foot_text),) = oob(frames, f"answer-foot-{query.pk}")
    assert SCRIPTED_MODEL in foot_text
    assert query.status == ChatQuery.Status.ERROR and query.response == "Partial *answer* and "
    await comm.disconnect()


async def test_a_failure_before_any_text_leaves_the_empty_answer_alone(scripted, owner_key):
    scripted.fail_before_first = "no provider answered"
    comm = chat_socket(owner_key)
    await comm.connect()
    await htmx_turn(comm)

    frames = await frames_until(comm, 'class="turn-controls" hx-swap-oob="outerHTML"', timeout=5)
    query = await ChatQuery.objects.aget()

    assert "no provider answered" in "".join(frames)
    assert not oob(frames, f"answer-{query.pk}") and not oob(frames, f"answer-foot-{query.pk}")
    await comm.disconnect()


async def test_following_a_finished_answer_replays_it_and_renders_it(scripted, owner_key):
    scripted.tokens = ["Use `x < y`", " here."]
    comm = chat_socket(owner_key)
    await comm.connect()
    await htmx_turn(comm)
    await read_to_the_end(comm)
    query = await ChatQuery.objects.aget()

    # What a page reloaded mid-answer sends: follow from the start.
    await comm.send_json_to({"action": "follow", "queryId": str(query.pk), "HEADERS": HTMX})
    frames = await read_to_the_end(comm)

    assert frames[0] == f'<div id="answer-{query.pk}" class="answer" hx-swap-oob="outerHTML"></div>'
    (answer_frame,) = [f for f in frames if f'id="answer-{query.pk}" class="answer" hx-swap-oob="outerHTML"><div' in f]
    assert "<code>x &lt; y</code>" in answer_frame
    await comm.disconnect()


async def test_json_clients_still_get_raw_markdown(scripted, owner_key):
    scripted.tokens = ["**bold**"]
    comm = chat_socket(owner_key)
    await comm.connect()
    await comm.send_json_to({"prompt": "Say it"})

    events = []
    while not events or events[-1]["type"] not in ("complete", "error"):
        events.append(json.loads(await comm.receive_from(timeout=5)))

    assert events[-1]["query"]["response"] == "**bold**"
    assert all("<strong>" not in json.dumps(event) for event in events)
    await comm.disconnect()
