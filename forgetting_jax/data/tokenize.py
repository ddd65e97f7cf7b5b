"""Language-model text to tokens: every token after the first is scored.

Texts are tokenized with the tokenizer's defaults (`tokenizer(text)["input_ids"]`, which adds BOS
where the tokenizer does) and truncated by keeping the first max_length tokens. Long documents are
cut into chunks that each fit max_length, at token boundaries, before they become examples.
"""

import numpy as np

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.records import Encoded

# Re-exported so that `forgetting_jax.data.tokenize` holds both encoders' result type.
__all__ = ["Encoded", "encode_lm", "chunk_text"]


def _input_ids(tokenizer, text: str, **kwargs) -> list[int]:
    return list(tokenizer(text, **kwargs)["input_ids"])


def encode_lm(tokenizer, text: str, max_length: int | None = None) -> Encoded:
    """Tokens of `text` with mask [False, True, ..., True]; keeps the first max_length tokens.

    Raises DataError when fewer than 2 tokens remain (nothing could be scored).
    """
    ids = _input_ids(tokenizer, text)
    dropped = 0
    if max_length is not None and len(ids) > max_length:
        dropped = len(ids) - max_length
        ids = ids[:max_length]
    if len(ids) < 2:
        raise DataError(f"text has {len(ids)} token(s); at least 2 are needed to score one", field="text")
    ids_T = np.asarray(ids, np.int32)
    mask_T = np.ones(ids_T.shape, np.bool_)
    mask_T[0] = False
    return Encoded(ids_T, mask_T, dropped)


def chunk_text(tokenizer, text: str, max_length: int, *, tails: dict | None = None) -> list[str]:
    """Cuts `text` into consecutive pieces whose `encode_lm` length is at most max_length.

    Pieces are cut at token starts, cover the whole text in order, and are never whitespace only
    (a whitespace-only tail joins the previous piece when it fits, else is dropped). A last piece
    too short to score (fewer than 2 tokens with the special tokens, which `encode_lm` rejects)
    likewise joins the previous piece when the two fit max_length, else is dropped; a text that
    is one piece is returned whole (a too-short document is the caller's bad record).
    tails: a dict whose "merged" and "dropped" counts are incremented for such tails.
    """
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text after special tokens")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= budget:
        return [text]
    starts = [start for start, end in offsets]
    pieces: list[str] = []
    first = 0  # token index where the next piece starts
    while first < len(offsets):
        begin = 0 if first == 0 else starts[first]
        window = budget
        while True:
            stop = first + window
            end = len(text) if stop >= len(offsets) else starts[stop]
            piece = text[begin:end]
            overflow = len(_input_ids(tokenizer, piece)) - max_length
            if overflow <= 0 or window == 1:
                break
            window = max(1, window - overflow)
        if end <= begin:  # several tokens share one character: take it whole
            stop = next((s for s in range(stop, len(offsets)) if starts[s] > begin), len(offsets))
            end = len(text) if stop >= len(offsets) else starts[stop]
            piece = text[begin:end]
        if piece.strip():
            pieces.append(piece)
        elif pieces and len(_input_ids(tokenizer, pieces[-1] + piece)) <= max_length:
            pieces[-1] += piece
        first = stop
    if len(pieces) > 1 and len(_input_ids(tokenizer, pieces[-1])) < 2:
        tail = pieces.pop()
        merged = len(_input_ids(tokenizer, pieces[-1] + tail)) <= max_length
        if merged:
            pieces[-1] += tail
        if tails is not None:
            key = "merged" if merged else "dropped"
            tails[key] = tails.get(key, 0) + 1
    return pieces
