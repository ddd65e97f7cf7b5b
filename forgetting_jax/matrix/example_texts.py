"""The first characters of each upstream example's text, kept in the matrix file as
`example_texts` [N] so that reports name examples by what they say, not only by id.

The text is the example's first TOKENS tokens decoded by the base tokenizer without special
tokens (whatever the source: lm text, chat messages, exact-match prompts), whitespace folded,
cut to CHARS characters.
"""

from typing import Any, Sequence

import numpy as np

TOKENS = 64
CHARS = 160


def example_texts(tokenizer: Any, token_ids: Sequence[np.ndarray], tokens: int = TOKENS, chars: int = CHARS
                  ) -> np.ndarray:
    """str [N]: the beginning of each example (see the module docstring)."""
    heads = [np.asarray(ids)[:tokens].tolist() for ids in token_ids]
    decoded = tokenizer.batch_decode(heads, skip_special_tokens=True) if heads else []
    return np.asarray([" ".join(text.split())[:chars].rstrip() for text in decoded], dtype=str)


def snippet(text: str, chars: int = 60) -> str:
    """`text` cut to `chars` characters (an ellipsis when cut), safe in a Markdown table cell."""
    text = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"
