"""Work done by a cheap utility model around a turn: summaries of long chats, short chat names, and web search
queries (chat/websearch.py cleans those and falls back to the prompt)."""

import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction

from billing import charges
from chat import search
from chat.models import AIModel, Chat
from chat.providers import ProviderError, get_provider, unavailable_reason
from chat.providers.base import Completion
from chat.services import invalidate_public_chat, token_budget
from core.tokens import BYTES_PER_TOKEN

logger = logging.getLogger(__name__)

SUMMARY_MAX_TOKENS = 300
NAME_MAX_TOKENS = 16
NAME_MAX_CHARS = 60
SEARCH_QUERY_MAX_TOKENS = 40


async def utility_model(names: list[str]) -> AIModel | None:
    """The first enabled, available text model among `names`."""
    for name in names:
        model = await AIModel.objects.filter(name=name, enabled=True, category=AIModel.Category.TEXT).afirst()
        if model is not None and unavailable_reason(model.provider) is None:
            return model
    return None


def _clip_to_tokens(text: str, tokens: int) -> str:
    """Keep the end of `text` within about `tokens` tokens (the newest part matters most)."""
    limit = max(0, tokens) * BYTES_PER_TOKEN
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[-limit:].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class BilledTo:
    """Whose ledger a utility call is written to: providers bill these tokens too, so the ledger must show them."""

    user_id: int
    chat_query_id: object


async def _ask(model: AIModel, instruction: str, material: str, max_tokens: int) -> Completion:
    """The utility model's answer (not yet in the ledger: the caller records its usage)."""
    provider = get_provider(model.provider)
    if provider is None:
        raise ProviderError(f"No provider is configured for {model.name}.")
    _, _, budget = token_budget(model)
    material = _clip_to_tokens(material, budget - max_tokens - 100)
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": material}]
    return await provider.complete(model.full_name, messages, max_tokens=max_tokens)


async def _complete(model: AIModel, instruction: str, material: str, max_tokens: int, billed_to: BilledTo) -> str:
    completion = await _ask(model, instruction, material, max_tokens)
    await sync_to_async(charges.do_record_utility_call)(
        billed_to.user_id,
        billed_to.chat_query_id,
        model,
        completion.usage.input_tokens,
        completion.usage.output_tokens,
    )
    return completion.text.strip()


async def summarise(model: AIModel, previous_summary: str, turns: list[tuple[dict, dict]], billed_to: BilledTo) -> str:
    lines = [f"Earlier summary: {previous_summary}"] if previous_summary else []
    for user_message, assistant_message in turns:
        lines.append(f"User: {user_message['content']}")
        lines.append(f"Assistant: {assistant_message['content']}")
    summary = await _complete(
        model,
        "Summarise this conversation in a short paragraph. Keep names, numbers, decisions and open questions.",
        "\n".join(lines),
        SUMMARY_MAX_TOKENS,
        billed_to,
    )
    if not summary:
        raise ProviderError(f"{model.name} returned an empty summary.")
    return summary


def clean_chat_name(raw: str) -> str:
    name = " ".join(raw.replace("\n", " ").split()).strip(" \"'`*#.:")
    if name.lower().startswith("title"):
        name = name[5:].lstrip(" :-")
    return name[:NAME_MAX_CHARS]


async def name_chat(
    chat_id, prompt: str, answer: str, model_names: list[str], billed_to: BilledTo, model: AIModel | None = None
) -> str | None:
    """Give the chat a short descriptive name; failures leave the title-based name in place. `model`: the first
    of `model_names`, when the caller has it already (the catalog is not read again)."""
    model = model or await utility_model(model_names)
    if model is None:
        return None
    try:
        completion = await _ask(
            model,
            "Reply with a short title (at most 6 words) for a chat that starts like this. Reply with the title only.",
            f"User: {prompt}\nAssistant: {answer}",
            NAME_MAX_TOKENS,
        )
    except ProviderError as exc:
        logger.info("chat naming failed", extra={"chat_id": str(chat_id), "reason": str(exc)})
        return None
    name = clean_chat_name(completion.text.strip())
    await sync_to_async(_save_name)(chat_id, name, billed_to, model, completion.usage)
    return name or None


def _save_name(chat_id, name: str, billed_to: BilledTo, model: AIModel, usage) -> None:
    """The naming call's ledger row and the name (when there is one), in one transaction and one hop to the sync
    thread. The name is searchable (chat/search.py) from the moment it is saved."""
    with transaction.atomic():
        charges.do_record_utility_call(
            billed_to.user_id, billed_to.chat_query_id, model, usage.input_tokens, usage.output_tokens
        )
        if name:
            Chat.objects.filter(pk=chat_id).update(name=name)
            search.index_chats([chat_id])
            invalidate_public_chat(chat_id)  # the public page shows the name once it commits


async def write_search_query(model: AIModel, conversation: str, billed_to: BilledTo) -> str:
    """The model's raw web search query for the last message of `conversation`; raises ProviderError."""
    return await _complete(
        model,
        "You turn the latest user message of a conversation into one web search query. Replace pronouns and vague "
        "references (it, they, this, that...) with what they refer to earlier in the conversation, and add the "
        "context a search needs. If the message is already a complete query, keep it as it is. Reply with the "
        "search query only: no quotes, no explanation.",
        conversation,
        SEARCH_QUERY_MAX_TOKENS,
        billed_to,
    )
