"""The pipeline's event vocabulary; every transport frames these dicts and adds nothing else."""


def status(message: str) -> dict:
    return {"type": "status", "message": message}


def metadata(query) -> dict:
    return {
        "type": "metadata",
        "chatId": str(query.chat_id),
        "chatName": query.chat.name,
        "title": query.chat.title,
        "queryId": str(query.id),
        "model": query.model,
    }


def content(text: str) -> dict:
    return {"type": "content", "content": text}


def sources(items: list[dict]) -> dict:
    """What grounded the answer, numbered as the answer cites it: files as [1], [2]…, web results as [W1]…"""
    return {"type": "sources", "sources": list(items)}


def complete(query_dict: dict, usage: dict | None) -> dict:
    return {"type": "complete", "status": query_dict["status"], "query": query_dict, "usage": usage}


def error(message: str, code: str, query_id=None) -> dict:
    event = {"type": "error", "message": message, "code": code}
    if query_id is not None:
        event["queryId"] = str(query_id)
    return event


TERMINAL_TYPES = frozenset({"complete", "error"})
