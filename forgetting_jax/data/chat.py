r"""Conversations to tokens, with only the response (the final assistant message) scored.

The conversation is rendered with the tokenizer's own `chat_template` when it has one, else with
`TULU_CHAT_TEMPLATE` (the Tulu/OLMo format):

    {bos}<|system|>\n{content}\n<|user|>\n{content}\n<|assistant|>\n{content}{eos}\n

The response is located in the rendered text (the content of the final assistant message, plus the
EOS that closes it when the template appends one), and a token is scored when its characters
overlap that span (tokenizers without offsets: by the token counts of the text before and
through the span). Tokens after the response (a template's trailing newline) are dropped, and
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


_PROBE = "7402913586142073"  # digits: unchanged by upper, lower, title or trim filters


def response_span(tokenizer, messages: list[dict]) -> tuple[str, int, int]:
    """(rendered text, start, end): the characters of the final message's content (+ its EOS).

    The start is where the template writes the response: found by rendering the conversation with
    a probe in place of the response, so it does not depend on the response's own text.
    """
    content = messages[-1]["content"]
    probe = render_chat(tokenizer, list(messages[:-1]) + [{"role": "assistant", "content": _PROBE}])
    full = render_chat(tokenizer, messages)
    start = probe.find(_PROBE)
    if start < 0 or full[:start] != probe[:start]:
        raise DataError("the chat template does not write the response where it can be located",
                        field="messages")
    for needle in (content, content.strip()):
        if full.startswith(needle, start):
            break
    else:
        raise DataError("the chat template does not render the response text verbatim", field="messages")
    end = start + len(needle)
    eos = getattr(tokenizer, "eos_token", None)
    gap = len(full[end:]) - len(full[end:].lstrip(" \t"))
    if eos and full.startswith(eos, end + gap):
        end += gap + len(eos)
    return full, start, end


def _tokens_and_mask(tokenizer, text: str, start: int, end: int) -> tuple[list[int], list[bool]]:
    """Token ids of `text` and whether each overlaps characters [start, end)."""
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        first = len(tokenizer(text[:start], add_special_tokens=False)["input_ids"])
        stop = len(tokenizer(text[:end], add_special_tokens=False)["input_ids"])
        return ids, [first <= t < stop for t in range(len(ids))]
    mask = [s < end and e > start and e > s for s, e in encoding["offset_mapping"]]
    return list(encoding["input_ids"]), mask


def encode_chat(tokenizer, messages: list[dict], max_length: int | None = None) -> Encoded:
    """Tokens of the rendered conversation; mask True on the final assistant message (+ EOS).

    messages: [{"role": str, "content": str}, ...], the last one the assistant's response.
    Keeps the last max_length tokens; raises ResponseTooLongError if the response does not fit.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("must end with an assistant turn", field="messages")
    text, start, end = response_span(tokenizer, messages)
    ids, mask = _tokens_and_mask(tokenizer, text, start, end)
    if not any(mask):
        raise DataError("the response produced no tokens", field="messages")
    last = max(t for t, m in enumerate(mask) if m) + 1
    ids, mask = ids[:last], mask[:last]
    first = mask.index(True)
    if first == 0:
        raise DataError("the response is the whole conversation: no token of context precedes it",
                        field="messages")
    num_response = last - first
    dropped = 0
    if max_length is not None and len(ids) > max_length:
        if num_response + 1 > max_length:
            raise ResponseTooLongError(
                f"the response has {num_response} tokens; with one token of context it needs "
                f"max_length >= {num_response + 1}, got {max_length}", field="messages")
        dropped = len(ids) - max_length
        ids, mask = ids[dropped:], mask[dropped:]
    return Encoded(np.asarray(ids, np.int32), np.asarray(mask, np.bool_), dropped)
