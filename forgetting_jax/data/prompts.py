"""Prompts and reference answers of records, for greedy decoding (`generate`, exact match).

  chat record {"id", "messages"}: the prompt is the conversation without its final assistant
      message (a conversation that ends with the user's turn is the prompt whole), rendered with
      the chat template and its generation prompt (data/chat.py); the reference answer is that
      final message's content (none for a prompt-only conversation).
  lm record {"id", "text"}: the prompt is the text; there is no reference answer.
"""

from forgetting_jax.data.chat import render_chat
from forgetting_jax.data.errors import DataError


def _messages(record: dict) -> list[dict]:
    messages = list(record["messages"])
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not messages:
        raise DataError("has no message before the answer: nothing to prompt with", field="messages")
    return messages


def prompt_text(tokenizer, record: dict) -> str:
    """The text a model continues to answer `record`."""
    if "messages" in record:
        return render_chat(tokenizer, _messages(record), add_generation_prompt=True)
    return record["text"]


def reference_answer(record: dict) -> str | None:
    """The final assistant message's content of a chat record, else None."""
    messages = record.get("messages") or []
    if messages and messages[-1].get("role") == "assistant":
        return messages[-1]["content"]
    return None
