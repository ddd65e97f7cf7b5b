"""Fixtures of the command tests."""

import pytest

from tiny_hf import make_tiny_model, make_tiny_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """(a tiny random llama HF directory with its own byte-level tokenizer, the model, the tokenizer)."""
    out = str(tmp_path_factory.mktemp("model"))
    tokenizer = make_tiny_tokenizer(out)
    model = make_tiny_model("llama", out, vocab_size=len(tokenizer))
    return out, model, tokenizer
