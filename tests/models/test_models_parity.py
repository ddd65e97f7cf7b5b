"""Logits match transformers for every family; causality; import -> export -> transformers round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from forgetting_jax.models import lm_head
from forgetting_jax.models.decoder import Decoder, unembedding
from forgetting_jax.models.hf_checkpoint import export_hf_model, load_hf_model
from tiny_hf import FAMILY_CONFIGS, make_tiny_model, torch_logits


def our_logits(config, params, tokens, positions=None, segment_ids=None):
    hidden = Decoder(config).apply({"params": params}, jnp.asarray(tokens), positions, segment_ids)
    return np.asarray(lm_head.logits(hidden, unembedding(params, config)))


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def family_model(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    model = make_tiny_model(request.param, str(out))
    config, params, hf = load_hf_model(str(out))
    return request.param, str(out), model, config, params, hf


def test_logits_match_transformers(family_model):
    name, _, model, config, params, _ = family_model
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 24))
    expected = torch_logits(model, tokens)
    got = our_logits(config, params, tokens)
    assert np.abs(expected).max() > 1.0, "the test model is too close to zero to tell anything"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4, err_msg=name)


def test_later_tokens_do_not_change_earlier_logits(family_model):
    _, _, _, config, params, _ = family_model
    rng = np.random.default_rng(1)
    a = rng.integers(0, config.vocab_size, (1, 16))
    b = a.copy()
    b[0, 10:] = rng.integers(0, config.vocab_size, 6)
    la, lb = our_logits(config, params, a), our_logits(config, params, b)
    np.testing.assert_allclose(la[0, :10], lb[0, :10], atol=1e-5)
    assert np.abs(la[0, 10:] - lb[0, 10:]).max() > 1e-3


def test_packed_segments_equal_separate_examples(family_model):
    """Two examples packed in one row (segment ids, restarted positions) give their own logits."""
    _, _, _, config, params, _ = family_model
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, config.vocab_size, 7), rng.integers(0, config.vocab_size, 9)
    row = np.concatenate([a, b, np.zeros(4, int)])[None]
    positions = np.concatenate([np.arange(7), np.arange(9), np.zeros(4, int)])[None]
    segments = np.concatenate([np.full(7, 1), np.full(9, 2), np.zeros(4, int)])[None]
    packed = our_logits(config, params, row, positions, segments)
    np.testing.assert_allclose(packed[0, :7], our_logits(config, params, a[None])[0], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:16], our_logits(config, params, b[None])[0], atol=1e-5)


def test_export_round_trip_loads_in_transformers(family_model, tmp_path):
    name, _, model, config, params, hf = family_model
    out = str(tmp_path / "exported")
    export_hf_model(out, config, params, base_config=hf)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    tokens = np.random.default_rng(3).integers(0, config.vocab_size, (1, 12))
    np.testing.assert_allclose(torch_logits(reloaded, tokens), torch_logits(model, tokens), atol=1e-5, err_msg=name)
    config2, params2, _ = load_hf_model(out)
    assert config2 == config
    jax.tree.map(np.testing.assert_array_equal, params2, params)
