"""Message content in our own neutral shape, which each provider turns into its SDK's content types.

A message's `content` is text (a str, as almost always), or a list of parts:
  {"type": "text", "text": str}
  {"type": "image", "mime": "image/png" | "image/jpeg" | "image/webp", "data": bytes}   (chat/vision.py prepares these)
Only models the catalog marks `vision` are sent image parts; every other model gets `text_only(messages)`."""

import base64


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(mime: str, data: bytes) -> dict:
    return {"type": "image", "mime": mime, "data": data}


def is_image(part) -> bool:
    return isinstance(part, dict) and part.get("type") == "image"


def text_of(content) -> str:
    """The text of a content: itself when it is text, else its text parts joined (images have none)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if isinstance(part, dict) and part.get("type") == "text")


def images_of(content) -> list[dict]:
    return [part for part in content if is_image(part)] if isinstance(content, list) else []


def has_images(messages: list[dict]) -> bool:
    return any(images_of(message.get("content")) for message in messages)


def text_only(messages: list[dict]) -> list[dict]:
    """The messages with text content only: what a model that cannot see images (or the local model) is sent."""
    return [
        {**message, "content": text_of(message.get("content"))} if isinstance(message.get("content"), list) else message
        for message in messages
    ]


def base64_of(part: dict) -> str:
    return base64.b64encode(part["data"]).decode("ascii")


def data_url(part: dict) -> str:
    return f"data:{part['mime']};base64,{base64_of(part)}"


def openai_content(content):
    """Chat completions (OpenAI, Groq, OpenRouter, self-hosted servers): text parts and `image_url` parts that carry
    the image as a data URL (the provider never fetches anything)."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "image_url", "image_url": {"url": data_url(part)}}
        if is_image(part)
        else {"type": "text", "text": part.get("text") or ""}
        for part in content
    ]


def anthropic_content(content):
    """Anthropic Messages: text blocks and base64 `image` blocks."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "image", "source": {"type": "base64", "media_type": part["mime"], "data": base64_of(part)}}
        if is_image(part)
        else {"type": "text", "text": part.get("text") or ""}
        for part in content
    ]
