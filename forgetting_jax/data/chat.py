"""Conversations to tokens, with only the response (the final assistant message) scored.

The conversation is rendered with the tokenizer's own `chat_template` when it has one, else with
`TULU_CHAT_TEMPLATE` (the Tulu/OLMo format):

    {bos}<|system|>\n{content}\n<|user|>\n{content}\n<|assistant|>\n{content}{eos}\n

The response is located in the rendered text (the content of the final assistant message, plus the
EOS that closes it when the template appends one), and a token is scored when its characters
overlap that span. Tokens after the response (a template's trailing newline) are dropped, and
truncation keeps the last max_length tokens so the response survives; a response that alone does
not fit (with one token of context before it) raises ResponseTooLongError. Training and scoring
both use `encode_chat`, so they agree on what the response is.
"""

import numpy as np

from forgetting_jax.data.errors import DataError, ResponseTooLongError
from forgetting_jax.data.records import Encoded

TULU_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' and eos_token %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def chat_template(tokenizer) -> str:
    """The template `encode_chat` uses for this tokenizer."""
    return getattr(tokenizer, "chat_template", None) or TULU_CHAT_TEMPLATE


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as text, special tokens included (BOS as the template writes it)."""
    return tokenizer.apply_chat_template(
        list(messages), chat_template=chat_template(tokenizer), tokenize=False,
        add_generation_prompt=add_generation_prompt)


def response_span(tokenizer, messages: list[dict]) -> tuple[str, int, int]:
    """(rendered text, start, end): the characters of the final message's content (+ its EOS)."""
    content = messages[-1]["content"]
    full = render_chat(tokenizer, messages)
    search_from = 0
    if len(messages) > 1:
        try:
            prompt = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
        except Exception:  # some templates reject a conversation that ends with a user turn
            prompt = ""
        if prompt and full.startswith(prompt):
            search_from = len(prompt)
    for needle in (content, content.strip()):
        start = full.find(needle, search_from) if search_from else full.rfind(needle)
        if start >= 0:
            break
    else:
        raise DataError("the chat template does not render the response text verbatim",
                        field="messages")
    end = start + len(needle)
    eos = getattr(tokenizer, "eos_token", None)
    if eos and full.startswith(eos, end):
        end += len(eos)
    return full, start, end


def encode_chat(tokenizer, messages: list[dict], max_length: int | None = None) -> Encoded:
    """Tokens of the rendered conversation; mask True on the final assistant message (+ EOS).

    messages: [{"role": str, "content": str}, ...], the last one the assistant's response.
    Keeps the last max_length tokens; raises ResponseTooLongError if the response does not fit.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("must end with an assistant turn", field="messages")
    text, start, end = response_span(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]
    mask = [s < end and e > start and e > s for s, e in offsets]
    if not any(mask):
        raise DataError("the response produced no tokens", field="messages")
    last = max(t for t, m in enumerate(mask) if m) + 1
    ids, mask = ids[:last], mask[:last]
    first = mask.index(True)
    num_response = last - first
    dropped = 0
    if max_length is not None and len(ids) > max_length:
        if num_response + 1 > max_length:
            raise ResponseTooLongError(
                f"the response has {num_response} tokens; with one token of context it needs "
                f"max_length >= {num_response + 1}, got {max_length}", field="messages")
        dropped = len(ids) - max_length
        ids, mask = ids[dropped:], mask[dropped:]
    if first == 0:
        raise DataError("the response is the whole conversation: no token of context precedes it",
                        field="messages")
    return Encoded(np.asarray(ids, np.int32), np.asarray(mask, np.bool_), dropped)
