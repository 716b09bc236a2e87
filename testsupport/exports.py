"""Files to import: ChatGPT's export (conversations.json, a list of conversations whose `mapping` is a tree of
messages) and ZIPs, built as the real ones are shaped."""

import io
import json
import zipfile

BASE_TIME = 1_700_000_000.0  # 2023-11-14, a plausible ChatGPT create_time


def chatgpt_node(node_id, parent, children, role=None, text=None, *, time=None, model=None, **message_fields):
    """One entry of a mapping; role None is the empty root ChatGPT starts every conversation with."""
    message = None
    if role is not None:
        content = message_fields.pop("content", None) or {"content_type": "text", "parts": [text or ""]}
        message = {
            "id": node_id,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": time,
            "update_time": None,
            "content": content,
            "status": "finished_successfully",
            "end_turn": True if role == "assistant" else None,
            "weight": 1.0,
            "metadata": {"model_slug": model} if model else {},
            "recipient": "all",
            **message_fields,
        }
    return {"id": node_id, "message": message, "parent": parent, "children": list(children)}


def chatgpt_branched_conversation(title="Trip planning") -> dict:
    """A conversation with both kinds of branches and the messages a real export has around the text:

        root → system (hidden) → u1 "Hi" ┬→ a1 "Hello v1" → u2 "Tell a joke" → a2 "A joke"
                                         └→ a1b "Hello v2" ┬→ u3 "Second question" → a3 (code) → t3 (tool) → a3b
                                          (regenerated)    └→ u3e "Second question, edited" → a3e "Edited answer"
    current_node is a3e: ChatGPT showed the regenerated first answer and the edited second prompt."""
    t = BASE_TIME
    nodes = [
        chatgpt_node("root", None, ["sys"]),
        chatgpt_node(
            "sys", "root", ["u1"], "system", "", time=None,
            metadata={"is_visually_hidden_from_conversation": True},
        ),
        chatgpt_node("u1", "sys", ["a1", "a1b"], "user", "Hi", time=t + 1),
        chatgpt_node("a1", "u1", ["u2"], "assistant", "Hello v1", time=t + 2, model="gpt-4o"),
        chatgpt_node("u2", "a1", ["a2"], "user", "Tell a joke", time=t + 3),
        chatgpt_node("a2", "u2", [], "assistant", "A joke", time=t + 4, model="gpt-4o"),
        chatgpt_node("a1b", "u1", ["u3", "u3e"], "assistant", "Hello v2", time=t + 5, model="gpt-4o"),
        chatgpt_node("u3", "a1b", ["a3"], "user", "Second question", time=t + 6),
        chatgpt_node(
            "a3", "u3", ["t3"], "assistant", time=t + 7, model="gpt-4o", recipient="python",
            content={"content_type": "code", "language": "python", "text": "print(6 * 7)"},
        ),
        chatgpt_node(
            "t3", "a3", ["a3b"], "tool", time=t + 8,
            content={"content_type": "execution_output", "text": "42"},
        ),
        chatgpt_node("a3b", "t3", [], "assistant", "It is 42.", time=t + 9, model="gpt-4o"),
        chatgpt_node(
            "u3e", "a1b", ["a3e"], "user", time=t + 10,
            content={"content_type": "multimodal_text", "parts": [
                {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-1", "size_bytes": 10},
                "Second question, edited",
            ]},
        ),
        chatgpt_node("a3e", "u3e", [], "assistant", "Edited answer", time=t + 11, model="gpt-4o-mini"),
    ]
    return {
        "title": title,
        "create_time": t,
        "update_time": t + 11,
        "mapping": {node["id"]: node for node in nodes},
        "moderation_results": [],
        "current_node": "a3e",
        "plugin_ids": None,
        "conversation_id": "c0ffee00-0000-4000-8000-000000000001",
        "default_model_slug": "gpt-4o",
        "id": "c0ffee00-0000-4000-8000-000000000001",
    }


def chatgpt_linear_conversation(title, turns, start=BASE_TIME) -> dict:
    """A conversation without branches: turns are (prompt, answer)."""
    nodes, parent = [chatgpt_node("root", None, [])], "root"
    for index, (prompt, answer) in enumerate(turns):
        user, assistant = f"u{index}", f"a{index}"
        nodes[-1]["children"].append(user)
        nodes.append(chatgpt_node(user, parent, [assistant], "user", prompt, time=start + 2 * index))
        nodes.append(chatgpt_node(assistant, user, [], "assistant", answer, time=start + 2 * index + 1))
        parent = assistant
    return {
        "title": title,
        "create_time": start,
        "update_time": start + 2 * len(turns),
        "mapping": {node["id"]: node for node in nodes},
        "current_node": parent,
        "default_model_slug": "gpt-4o",
    }


def zip_of(members: dict[str, bytes | str | dict | list]) -> bytes:
    """A ZIP (deflated) of the members; dicts and lists are written as JSON."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            if isinstance(data, dict | list):
                data = json.dumps(data)
            archive.writestr(name, data)
    return buffer.getvalue()
