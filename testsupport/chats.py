"""Chats with branches built straight in the database (the `make_chat` fixture builds linear ones)."""

from chat.models import ChatQuery


def queries_of(chat) -> list[ChatQuery]:
    return list(ChatQuery.objects.filter(chat=chat).order_by("created_at"))


def branched_chat(make_chat, owner, answers=("A1", "A2", "A3", "A2b")):
    """Q1 → (Q2 → Q3 | Q2b): turn 2 has two versions, the second shown. `answers` are A1, A2, A3 and A2b's."""
    chat = make_chat(owner, [("Q1", answers[0]), ("Q2", answers[1]), ("Q3", answers[2])])
    q1, q2, q3 = queries_of(chat)
    ChatQuery.objects.filter(pk=q2.pk).update(selected=False)
    q2b = ChatQuery.objects.create(
        chat=chat, parent=q1, prompt="Q2", response=answers[3], model=chat.model, status="complete"
    )
    return chat, q1, q2, q3, q2b
