"""Shared fixtures of the data tests: the bundled demo tokenizer, loaded once."""

import pytest


@pytest.fixture(scope="session")
def demo_tokenizer():
    from forgetting_jax.data.demo.corpus import load_demo_tokenizer

    return load_demo_tokenizer()
