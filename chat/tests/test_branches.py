"""Branches: regenerating an answer or editing a prompt adds a version of that turn beside the old one (nothing is
lost), the new version is shown, a new prompt follows the branch shown, and the model sees exactly that branch."""

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from billing.models import UsageEntry
from chat.models import Chat, ChatQuery
from testsupport.http import ServerAsyncClient, bearer

pytestmark = pytest.mark.django_db(transaction=True)

THREE_TURNS = [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]


async def post(key, path, payload=None):
    return await ServerAsyncClient().post(
        path, payload if payload is not None else {}, content_type="application/json", headers=bearer(key)
    )


async def three_turn_chat(make_chat, owner):
    chat = await sync_to_async(make_chat)(owner, THREE_TURNS)
    q1, q2, q3 = [q async for q in ChatQuery.objects.filter(chat=chat).order_by("created_at")]
    return chat, q1, q2, q3


async def shown_prompts(chat) -> list[str]:
    from chat.branches import selected_branch

    return [q.prompt for q in await sync_to_async(selected_branch)(chat.pk)]


def sent_conversation(provider) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in provider.calls[-1]["messages"] if m["role"] != "system"]


async def test_regenerate_adds_a_version_with_the_same_parent_and_prompt_and_keeps_the_old_branch(
    scripted, owner, owner_key, make_chat
):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    scripted.tokens = ["A2 again"]

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/regenerate")

    assert response.status_code == 201, response.content
    new = await ChatQuery.objects.aget(pk=response.json()["chatQuery"]["id"])
    assert (new.parent_id, new.prompt, new.response, new.selected) == (q1.pk, "Q2", "A2 again", True)
    # The old version and the turn after it are still there, only no longer shown.
    q2, q3 = await ChatQuery.objects.aget(pk=q2.pk), await ChatQuery.objects.aget(pk=q3.pk)
    assert (q2.parent_id, q2.response, q2.selected) == (q1.pk, "A2", False)
    assert (q3.parent_id, q3.response) == (q2.pk, "A3")
    assert await shown_prompts(chat) == ["Q1", "Q2"]
    # The model saw the branch up to the regenerated turn's parent, and that turn's prompt: not A2, not Q3.
    assert sent_conversation(scripted) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]


async def test_edit_adds_a_version_with_the_new_prompt_and_the_history_before_it(
    scripted, owner, owner_key, make_chat
):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/edit", {"prompt": "Q2 rephrased"})

    assert response.status_code == 201, response.content
    new = await ChatQuery.objects.aget(pk=response.json()["chatQuery"]["id"])
    assert (new.parent_id, new.prompt) == (q1.pk, "Q2 rephrased")
    assert (await ChatQuery.objects.aget(pk=q2.pk)).prompt == "Q2"
    assert await shown_prompts(chat) == ["Q1", "Q2 rephrased"]
    assert sent_conversation(scripted) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2 rephrased")]


async def test_editing_the_first_prompt_starts_a_new_branch_with_no_history(scripted, owner, owner_key, make_chat):
    chat, q1, *_ = await three_turn_chat(make_chat, owner)

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q1.pk}/edit", {"prompt": "Q1 again"})

    new = await ChatQuery.objects.aget(pk=response.json()["chatQuery"]["id"])
    assert new.parent_id is None
    assert await shown_prompts(chat) == ["Q1 again"]
    assert sent_conversation(scripted) == [("user", "Q1 again")]


async def test_a_new_prompt_follows_the_branch_shown_and_the_model_sees_exactly_it(
    scripted, owner, owner_key, make_chat
):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    scripted.tokens = ["B2"]
    regenerated = (await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/regenerate")).json()["chatQuery"]
    scripted.tokens = ["B3"]

    after_new = (await post(owner_key, f"/api/v1/chat/{chat.pk}", {"prompt": "Q3 on the new branch"})).json()

    assert after_new["chatQuery"]["parentId"] == regenerated["id"]
    assert sent_conversation(scripted) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "B2"),
        ("user", "Q3 on the new branch"),
    ]

    # Back to the first version of turn 2: what follows it is shown again, and a new prompt continues from Q3.
    assert (await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/select")).status_code == 200
    assert await shown_prompts(chat) == ["Q1", "Q2", "Q3"]
    after_old = (await post(owner_key, f"/api/v1/chat/{chat.pk}", {"prompt": "Q4"})).json()
    assert after_old["chatQuery"]["parentId"] == str(q3.pk)
    assert sent_conversation(scripted) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
        ("user", "Q3"),
        ("assistant", "A3"),
        ("user", "Q4"),
    ]


async def test_regenerating_a_turn_on_a_branch_not_shown_shows_that_branch(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/regenerate")
    assert await shown_prompts(chat) == ["Q1", "Q2"]

    # Q3 follows the old version of turn 2, which is not shown: its new version brings that branch back.
    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/regenerate")

    new = response.json()["chatQuery"]
    assert new["parentId"] == str(q2.pk)
    versions = ChatQuery.objects.filter(chat=chat, parent=q2).order_by("created_at")
    assert [str(q.pk) async for q in versions] == [str(q3.pk), new["id"]]
    assert await shown_prompts(chat) == ["Q1", "Q2", "Q3"]
    from chat.branches import selected_leaf_id

    assert str(await sync_to_async(selected_leaf_id)(chat.pk)) == new["id"]


async def test_each_fork_remembers_the_version_last_shown(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    q2b = (await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/regenerate")).json()["chatQuery"]["id"]
    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/select")
    scripted.tokens = ["A3 again"]
    q3b = (await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/regenerate")).json()["chatQuery"]["id"]
    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/select")  # the first answer to Q3 again

    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2b}/select")
    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/select")

    from chat.branches import selected_branch

    branch = await sync_to_async(selected_branch)(chat.pk)
    assert [q.pk for q in branch] == [q1.pk, q2.pk, q3.pk]  # not the newer q3b: q3 was the one last shown
    assert branch[2].versions.ids == (str(q3.pk), q3b) and branch[2].versions.index == 0


async def test_a_regenerate_is_a_turn_like_any_other_for_quota_and_ledger(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)

    response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/regenerate")

    new_id = response.json()["chatQuery"]["id"]
    entries = [e async for e in UsageEntry.objects.filter(chat_query_id=new_id)]
    assert [(e.action, e.user_id) for e in entries] == [("chat", owner.pk)]


async def test_regenerating_a_turn_still_streaming_is_refused_and_nothing_is_added(
    scripted, owner, owner_key, make_chat
):
    chat = await sync_to_async(make_chat)(owner, [("Q1", "A1"), ("Q2", "partial", "streaming")])
    streaming = await ChatQuery.objects.aget(chat=chat, status="streaming")

    for action, body in (("regenerate", {}), ("edit", {"prompt": "Other"})):
        response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{streaming.pk}/{action}", body)
        assert response.status_code == 409, response.content
        assert response.json()["code"] == "still_streaming"
    assert await ChatQuery.objects.filter(chat=chat).acount() == 2
    assert scripted.calls == []


# --- the stored summary, made over one branch ------------------------------------------------------------------


async def test_a_summary_made_on_another_branch_is_left_out(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    # Summarised up to Q3, which is not on the branch of a new version of Q2.
    await Chat.objects.filter(pk=chat.pk).aupdate(summary="They talked about Q3.", summary_until=q3.created_at)

    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q2.pk}/regenerate")

    assert sent_conversation(scripted) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]


async def test_a_summary_of_turns_on_the_branch_replaces_them(scripted, owner, owner_key, make_chat):
    chat, q1, q2, q3 = await three_turn_chat(make_chat, owner)
    await Chat.objects.filter(pk=chat.pk).aupdate(summary="They talked about Q1 and Q2.", summary_until=q2.created_at)

    await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{q3.pk}/edit", {"prompt": "Q3 edited"})

    assert sent_conversation(scripted) == [
        ("user", "Summary of our conversation so far: They talked about Q1 and Q2."),
        ("assistant", "Summary noted."),
        ("user", "Q3 edited"),
    ]


# --- chats saved before branches ----------------------------------------------------------------------------


def test_the_migration_links_each_chats_queries_in_order_and_shows_the_last(transactional_db, owner):
    executor = MigrationExecutor(connection)
    before, after = [("chat", "0005_chat_unlisted")], [("chat", "0006_chatquery_branches")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldChat, OldQuery = old.get_model("chat", "Chat"), old.get_model("chat", "ChatQuery")  # noqa: N806
    chats = [OldChat.objects.create(owner_id=owner.pk, model="m") for _ in range(2)]
    made = {}
    for chat in chats:
        # Created out of order on purpose: the migration follows created_at, not insertion.
        rows = [OldQuery.objects.create(chat=chat, prompt=f"{chat.pk}-{i}", model="m") for i in range(3)]
        for position, row in zip((2, 0, 1), rows, strict=True):
            OldQuery.objects.filter(pk=row.pk).update(created_at=row.created_at.replace(year=2020, second=position))
        made[chat.pk] = [rows[1].pk, rows[2].pk, rows[0].pk]  # by created_at
    OldChat.objects.create(owner_id=owner.pk, model="m")  # an empty chat is fine too

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from chat.branches import selected_branch

    for chat_id, ordered in made.items():
        parents = dict(ChatQuery.objects.filter(chat_id=chat_id).values_list("pk", "parent_id"))
        assert parents == {ordered[0]: None, ordered[1]: ordered[0], ordered[2]: ordered[1]}
        assert [q.pk for q in selected_branch(chat_id)] == ordered
        assert all(ChatQuery.objects.filter(chat_id=chat_id).values_list("selected", flat=True))


LONG = "word " * 120  # about 200 estimated tokens


async def test_a_branch_too_long_for_the_model_is_summarised_afresh_not_from_another_branchs_summary(
    scripted, owner, owner_key, make_chat
):
    from django.test import override_settings

    from testsupport.scripted import install_scripted_model, uninstall_scripted_model

    small, _ = await sync_to_async(install_scripted_model)(context_limit=1200)  # the chat's model, now small
    summariser, _ = await sync_to_async(install_scripted_model)(name="cheap-model", provider_name="cheap")
    summariser.tokens = ["They discussed ", "this branch."]
    chat = await sync_to_async(make_chat)(owner, [(f"Question {i} {LONG}", f"Answer {i} {LONG}") for i in range(8)])
    turns = [q async for q in ChatQuery.objects.filter(chat=chat).order_by("created_at")]
    await Chat.objects.filter(pk=chat.pk).aupdate(summary="OTHER BRANCH SUMMARY", summary_until=turns[-1].created_at)
    try:
        with override_settings(UTILITY_MODELS=["cheap-model"]):
            response = await post(owner_key, f"/api/v1/chat/{chat.pk}/queries/{turns[-1].pk}/regenerate")
    finally:
        await sync_to_async(uninstall_scripted_model)("cheap")

    assert response.status_code == 201, response.content
    assert len(summariser.calls) == 1
    assert "OTHER BRANCH SUMMARY" not in str(summariser.calls[0]["messages"])
    sent = small.calls[-1]["messages"]
    assert sent[0]["content"] == "Summary of our conversation so far: They discussed this branch."
    assert "OTHER BRANCH SUMMARY" not in str(sent)
    chat = await Chat.objects.aget(pk=chat.pk)
    on_branch = {q.created_at for q in turns[:-1]}
    assert chat.summary == "They discussed this branch." and chat.summary_until in on_branch
