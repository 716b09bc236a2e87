"""Offline token arithmetic.

No tokenizer file may be downloaded at run time, and each provider tokenizes differently, so budgets use a
conservative estimate: 3 UTF-8 bytes per token (English averages about 4), plus a few tokens per message
for the chat template. Over-estimating only trims history a little early; under-estimating would overflow.
"""

import math

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
# What one image part costs a vision model, whatever its size: the most any provider charges for an image of at most
# 2048 pixels a side (chat/vision.py's limit; Anthropic's ~1,600 for 1.15 megapixels, above OpenAI's and Gemini's).
IMAGE_TOKENS = 1600


def estimate_tokens(text: str) -> int:
    # surrogatepass: a lone surrogate counts as its 3 bytes instead of crashing (the services refuse such text).
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / BYTES_PER_TOKEN)


def estimate_message_tokens(message: dict) -> int:
    """A message's tokens: its content is text, or a list of parts (text parts, and images at IMAGE_TOKENS each)."""
    content = message.get("content") or ""
    if isinstance(content, str):
        return estimate_tokens(content) + MESSAGE_OVERHEAD_TOKENS
    tokens = MESSAGE_OVERHEAD_TOKENS
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            tokens += estimate_tokens(part.get("text") or "")
        elif part.get("type") == "image":
            tokens += IMAGE_TOKENS
    return tokens


def answer_budget(context_limit: int, configured_max: int) -> int:
    """Tokens reserved for the answer: the configured maximum, but never more than a quarter of the window."""
    return max(16, min(configured_max, context_limit // 4))


def fit_history(
    system: list[dict], history: list[tuple[dict, dict]], current: dict, limit: int
) -> tuple[list[dict], int]:
    """system + the newest whole turns of history that fit + current, within `limit` tokens; and how many of the
    oldest turns were left out."""
    used = sum(map(estimate_message_tokens, system)) + estimate_message_tokens(current)
    kept: list[tuple[dict, dict]] = []
    for user_message, assistant_message in reversed(history):
        cost = estimate_message_tokens(user_message) + estimate_message_tokens(assistant_message)
        if used + cost > limit:
            break
        used += cost
        kept.append((user_message, assistant_message))
    messages = list(system)
    for user_message, assistant_message in reversed(kept):
        messages += [user_message, assistant_message]
    messages.append(current)
    return messages, len(history) - len(kept)
