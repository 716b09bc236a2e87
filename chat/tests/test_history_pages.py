"""A chat's history through the API comes a page at a time (GET /api/v1/chat/{id}?limit=&before=): the newest turns
of the branch shown, oldest first, and a cursor to the turns above them; and the branch's end is kept on the chat
(Chat.branch_leaf) by every path that adds or selects a version, so that neither a page nor a turn's start walks
the chat from its first turn."""

import re

import pytest
from django.test import Client

from chat import branches, services
from chat.models import Chat, ChatQuery
from chat.schemas import ChatDetailOut
from testsupport.chats import branched_chat
from testsupport.http import ServerAsyncClient, bearer

pytestmark = pytest.mark.django_db


def turns(count: int) -> list[tuple[str, str]]:
    return [(f"Question {n}", f"Answer {n}") for n in range(count)]


def get(key, url):
    return Client().get(url, headers=bearer(key) if key else {})


def prompts(response) -> list[str]:
    return [query["prompt"] for query in response.json()["queries"]]


def test_the_owner_reads_a_long_chat_newest_turns_first_and_older_pages_by_cursor(owner, owner_key, make_chat):
    chat = make_chat(owner, turns(7))
    url = f"/api/v1/chat/{chat.pk}"

    first = get(owner_key, f"{url}?limit=3")
    assert first.status_code == 200
    assert prompts(first) == ["Question 4", "Question 5", "Question 6"]
    second = get(owner_key, f"{url}?limit=3&before={first.json()['nextCursor']}")
    assert prompts(second) == ["Question 1", "Question 2", "Question 3"]
    last = get(owner_key, f"{url}?limit=3&before={second.json()['nextCursor']}")
    assert prompts(last) == ["Question 0"] and last.json()["nextCursor"] is None
    # Without a limit: a page of services.HISTORY_PAGE_SIZE (20), here the whole chat.
    whole = get(owner_key, url).json()
    assert len(whole["queries"]) == 7 and whole["nextCursor"] is None
    assert whole["queries"][0]["parentId"] is None


def test_a_page_matches_the_response_schema_it_is_no_longer_validated_against(owner, owner_key, make_chat):
    chat = make_chat(owner, turns(3))
    body = get(owner_key, f"/api/v1/chat/{chat.pk}").json()

    detail = ChatDetailOut.model_validate(body)  # what ninja checked before answers were sent without it
    assert [q.prompt for q in detail.queries] == ["Question 0", "Question 1", "Question 2"]
    assert body["queries"][1]["siblings"] == {"ids": [body["queries"][1]["id"]], "index": 0, "count": 1}
    assert set(body) == {"chat", "queries", "nextCursor", "branches", "documents"}


def test_a_page_shows_each_turns_versions_and_follows_the_branch_shown(owner, owner_key, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)
    url = f"/api/v1/chat/{chat.pk}"

    shown = get(owner_key, url).json()["queries"]
    assert [q["id"] for q in shown] == [str(q1.pk), str(q2b.pk)]
    assert shown[1]["siblings"] == {"ids": [str(q2.pk), str(q2b.pk)], "index": 1, "count": 2}
    other_branch = get(owner_key, f"{url}?leaf={q3.pk}&limit=1").json()
    assert [q["id"] for q in other_branch["queries"]] == [str(q3.pk)]
    above = get(owner_key, f"{url}?leaf={q3.pk}&before={other_branch['nextCursor']}").json()["queries"]
    assert [q["id"] for q in above] == [str(q1.pk), str(q2.pk)]
    assert above[1]["siblings"]["index"] == 0


def test_bad_cursors_limits_and_leaves_are_refused_clearly(owner, other, owner_key, make_chat):
    chat = make_chat(owner, turns(2))
    elsewhere = make_chat(other, turns(1)).queries.get()
    url = f"/api/v1/chat/{chat.pk}"

    for before in ("nonsense", str(elsewhere.pk), "00000000-0000-0000-0000-000000000000"):
        response = get(owner_key, f"{url}?before={before}")
        assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor"), before
    for limit in ("0", "201", "many"):
        assert get(owner_key, f"{url}?limit={limit}").status_code == 400
    response = get(owner_key, f"{url}?leaf={elsewhere.pk}")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_another_user_and_an_anonymous_caller_cannot_read_a_page(owner, other_key, make_chat):
    chat = make_chat(owner, turns(3))
    cursor = str(chat.queries.order_by("created_at").last().pk)

    for url in (f"/api/v1/chat/{chat.pk}", f"/api/v1/chat/{chat.pk}?limit=1&before={cursor}"):
        response = get(other_key, url)
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
        assert "Question" not in response.content.decode()
        assert get(None, url).status_code == 401


def test_the_chat_list_matches_its_schema_with_each_chats_sorted_tags(owner, owner_key, make_chat):
    from chat import library
    from chat.schemas import ChatsOut

    tagged, plain = make_chat(owner, turns(1)), make_chat(owner, turns(1))
    library.do_set_tags(owner, tagged.pk, ["work", "alpha"])
    body = get(owner_key, "/api/v1/chat/user").json()

    ChatsOut.model_validate(body)
    tags = {chat["id"]: chat["tags"] for chat in body["chats"]}
    assert tags == {str(tagged.pk): ["alpha", "work"], str(plain.pk): []}


# --- the stored leaf ---------------------------------------------------------------------------------------------


def test_a_chat_without_a_stored_leaf_finds_its_branch_by_walking_it(owner, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)  # rows written straight: no leaf stored

    assert Chat.objects.get(pk=chat.pk).branch_leaf is None
    assert branches.shown_leaf_id(chat.pk) == q2b.pk
    assert branches.refresh_shown_leaf(chat.pk) == q2b.pk
    assert Chat.objects.get(pk=chat.pk).branch_leaf == q2b.pk
    assert branches.shown_leaf_id(Chat.objects.create(owner=owner, model="m").pk) is None


def test_turns_added_below_the_stored_leaf_by_other_means_are_followed(owner, make_chat):
    chat = make_chat(owner, turns(2))
    leaf = branches.refresh_shown_leaf(chat.pk)
    below = ChatQuery.objects.create(chat=chat, parent_id=leaf, prompt="Q", response="A", model=chat.model)

    assert branches.shown_leaf_id(chat.pk) == below.pk


def test_a_stored_leaf_of_another_chat_or_gone_sends_the_reader_back_to_the_walk(owner, make_chat):
    chat, elsewhere = make_chat(owner, turns(2)), make_chat(owner, turns(1))
    last = chat.queries.order_by("created_at").last()

    Chat.objects.filter(pk=chat.pk).update(branch_leaf=elsewhere.queries.get().pk)
    assert branches.shown_leaf_id(chat.pk) == last.pk
    Chat.objects.filter(pk=chat.pk).update(branch_leaf="00000000-0000-0000-0000-000000000000")
    assert branches.shown_leaf_id(chat.pk) == last.pk


def test_selecting_a_version_stores_the_end_of_the_branch_it_shows(owner, make_chat):
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)

    services.do_select_version(owner, chat.pk, q2.pk)
    assert Chat.objects.get(pk=chat.pk).branch_leaf == q3.pk
    services.do_select_version(owner, chat.pk, q2b.pk)
    assert Chat.objects.get(pk=chat.pk).branch_leaf == q2b.pk
    services.do_select_version(owner, chat.pk, q1.pk)  # the versions last shown below it stay shown
    assert Chat.objects.get(pk=chat.pk).branch_leaf == q2b.pk


def test_an_import_stores_the_end_of_each_chats_branch(owner):
    from chat import portability

    plan = portability.ImportPlan(
        source="test",
        chats=[
            portability.ImportedChat(
                title="Imported",
                queries=[
                    portability.ImportedQuery("a", None, "Q1", "A1"),
                    portability.ImportedQuery("b", "a", "Q2", "A2"),
                    portability.ImportedQuery("c", "a", "Q2 again", "A2b", selected=False),
                    portability.ImportedQuery("d", "b", "Q3", "A3"),
                ],
            )
        ],
    )
    (chat,) = portability.do_import(owner, plan)

    stored = Chat.objects.get(pk=chat.pk)
    assert ChatQuery.objects.get(pk=stored.branch_leaf).prompt == "Q3"
    assert branches.shown_leaf_id(chat.pk) == stored.branch_leaf


async def post(key, path, payload):
    return await ServerAsyncClient().post(path, payload, content_type="application/json", headers=bearer(key))


async def stored_leaf(chat_id):
    return (await Chat.objects.aget(pk=chat_id)).branch_leaf


@pytest.mark.django_db(transaction=True)
async def test_every_turn_regenerate_edit_and_select_keeps_the_stored_leaf_in_step(scripted, owner, owner_key):
    """Through the API, each way a version is added or shown leaves the chat's stored leaf at the end of the branch
    shown, and a new prompt then follows that branch (read from the stored leaf)."""
    first = await post(owner_key, "/api/v1/chat", {"prompt": "Q1"})
    chat_id, q1 = first.json()["chat"]["id"], first.json()["chatQuery"]["id"]
    assert str(await stored_leaf(chat_id)) == q1
    q2 = (await post(owner_key, f"/api/v1/chat/{chat_id}", {"prompt": "Q2"})).json()["chatQuery"]["id"]
    assert str(await stored_leaf(chat_id)) == q2

    again = (await post(owner_key, f"/api/v1/chat/{chat_id}/queries/{q2}/regenerate", {})).json()["chatQuery"]
    assert str(await stored_leaf(chat_id)) == again["id"]
    edited = (await post(owner_key, f"/api/v1/chat/{chat_id}/queries/{q1}/edit", {"prompt": "Q1'"})).json()
    assert str(await stored_leaf(chat_id)) == edited["chatQuery"]["id"]

    selected = await post(owner_key, f"/api/v1/chat/{chat_id}/queries/{q1}/select", {})
    assert selected.status_code == 200, selected.content
    assert str(await stored_leaf(chat_id)) == again["id"]  # Q1 → the version of Q2 last shown
    follows = (await post(owner_key, f"/api/v1/chat/{chat_id}", {"prompt": "Q3"})).json()["chatQuery"]
    assert follows["parentId"] == again["id"]
    assert str(await stored_leaf(chat_id)) == follows["id"]


# --- the web page: the newest turns, older ones as the reader scrolls up --------------------------------------------


def turn_ids(html: str) -> list[str]:
    return re.findall(r'<article class="turn" id="turn-([0-9a-f-]{36})"', html)


def test_the_chat_page_shows_the_newest_turns_and_loads_older_ones_above_them(owner, owner_client, make_chat):
    chat = make_chat(owner, turns(services.HISTORY_PAGE_SIZE + 5))
    ids = [str(q.pk) for q in chat.queries.order_by("created_at")]

    page = owner_client.get(f"/chat/{chat.pk}/").content.decode()
    assert turn_ids(page) == ids[5:]
    marker = re.search(r'hx-get="(/chat/[^"]+/turns/\?before=[^"]+)"', page)
    assert marker and marker[1] == f"/chat/{chat.pk}/turns/?before={ids[5]}"
    assert f'id="parent-id" name="parentId" value="{ids[-1]}"' in page  # a new prompt follows the last turn

    older = owner_client.get(marker[1])
    assert older.status_code == 200
    assert turn_ids(older.content.decode()) == ids[:5] and "turns-older" not in older.content.decode()
    assert "Answer 0" in older.content.decode()  # rendered answers, as on the page


def test_older_turns_refuse_other_users_anonymous_callers_and_bad_cursors(owner, owner_client, other_client, make_chat):
    chat = make_chat(owner, turns(3))
    last = str(chat.queries.order_by("created_at").last().pk)
    url = f"/chat/{chat.pk}/turns/?before={last}"

    assert owner_client.get(url).status_code == 200
    assert other_client.get(url).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    assert owner_client.get(f"/chat/{chat.pk}/turns/?before=nonsense").status_code == 400
    assert owner_client.get(f"/chat/{chat.pk}/turns/").status_code == 400  # no cursor: nothing to continue


def test_older_turns_cost_the_same_queries_for_a_short_and_a_long_chat(owner, owner_client, make_chat):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    short, long = make_chat(owner, turns(3)), make_chat(owner, turns(200))
    counts = []
    for chat in (short, long):
        cursor = str(chat.queries.order_by("created_at").last().pk)
        owner_client.get(f"/chat/{chat.pk}/turns/?before={cursor}")
        with CaptureQueriesContext(connection) as captured:
            response = owner_client.get(f"/chat/{chat.pk}/turns/?before={cursor}")
        assert response.status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]


def test_the_migration_stores_the_leaf_of_each_existing_chats_branch(owner, make_chat):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("chat.migrations.0012_chat_branch_leaf")
    chat, q1, q2, q3, q2b = branched_chat(make_chat, owner)  # Q1 → (Q2 → Q3 | Q2b shown)
    linear, empty = make_chat(owner, turns(3)), Chat.objects.create(owner=owner, model="m")

    migration.store_leaves(apps, None)

    assert Chat.objects.get(pk=chat.pk).branch_leaf == q2b.pk
    assert Chat.objects.get(pk=linear.pk).branch_leaf == linear.queries.order_by("created_at").last().pk
    assert Chat.objects.get(pk=empty.pk).branch_leaf is None
    ChatQuery.objects.filter(pk=q2b.pk).update(selected=False)
    ChatQuery.objects.filter(pk=q2.pk).update(selected=True)
    migration.store_leaves(apps, None)
    assert Chat.objects.get(pk=chat.pk).branch_leaf == q3.pk
