"""lm encoding (every token after the first scored) and text chunking (data/tokenize.py)."""

import pytest

from forgetting_jax.data.errors import DataError
from forgetting_jax.data.tokenize import chunk_text, encode_lm


def test_encode_lm_scores_every_token_after_the_first(demo_tokenizer):
    encoded = encode_lm(demo_tokenizer, "Return the sum of two numbers.")
    assert encoded.ids.tolist() == demo_tokenizer("Return the sum of two numbers.")["input_ids"]
    assert encoded.ids[0] == demo_tokenizer.bos_token_id
    assert not encoded.mask[0] and encoded.mask[1:].all() and encoded.num_scored == len(encoded.ids) - 1
    cut = encode_lm(demo_tokenizer, "Return the sum of two numbers.", max_length=4)
    assert cut.ids.tolist() == encoded.ids[:4].tolist() and cut.num_truncated == len(encoded.ids) - 4


def test_encode_lm_needs_two_tokens(demo_tokenizer):
    with pytest.raises(DataError, match="at least 2"):
        encode_lm(demo_tokenizer, "a", max_length=1)


def test_chunk_text_bounds_and_order(demo_tokenizer):
    from forgetting_jax.data.demo.corpus import read_demo_corpus

    text = next(r["text"] for r in read_demo_corpus() if r["id"] == "reference.assert")
    pieces = chunk_text(demo_tokenizer, text, 48)
    assert len(pieces) > 3 and all(p.strip() for p in pieces)
    assert "".join(pieces) == text.rstrip()
    assert all(len(encode_lm(demo_tokenizer, p).ids) <= 48 for p in pieces)
    assert chunk_text(demo_tokenizer, "short text", 48) == ["short text"]
