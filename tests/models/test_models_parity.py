"""Logits match transformers for every family; causality; import -> export -> transformers round trip."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from forgetting_jax.models import lm_head
from forgetting_jax.models.decoder import Decoder, unembedding
from forgetting_jax.models.hf_checkpoint import export_hf_model, load_hf_model
from tiny_hf import FAMILY_CONFIGS, make_tiny_model, torch_logits

# Every forward pass of a family runs on this one shape (2 rows of 24 tokens; shorter inputs right-
# padded, which causal attention cannot see), so that each family compiles twice: without and with
# packing (positions, segment ids).
ROWS, LENGTH = 2, 24


@functools.partial(jax.jit, static_argnums=0)
def _logits(config, params, tokens, positions, segment_ids):
    hidden = Decoder(config).apply({"params": params}, tokens, positions, segment_ids)
    return lm_head.logits(hidden, unembedding(params, config))


def our_logits(config, params, tokens, positions=None, segment_ids=None):
    """[ROWS, LENGTH, V] logits of tokens [ROWS, LENGTH] (positions and segment ids: packed rows)."""
    assert np.shape(tokens) == (ROWS, LENGTH), np.shape(tokens)
    as_array = lambda x: None if x is None else jnp.asarray(x)  # noqa: E731
    return np.asarray(_logits(config, params, jnp.asarray(tokens), as_array(positions), as_array(segment_ids)))


def right_padded(*sequences):
    """[ROWS, LENGTH] rows holding each sequence at its start, zeros after."""
    out = np.zeros((ROWS, LENGTH), np.int64)
    for row, ids in enumerate(sequences):
        out[row, :len(ids)] = ids
    return out


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def family_model(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    model = make_tiny_model(request.param, str(out))
    config, params, hf = load_hf_model(str(out))
    return request.param, str(out), model, config, params, hf


def test_logits_match_transformers(family_model):
    name, _, model, config, params, _ = family_model
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (ROWS, LENGTH))
    expected = torch_logits(model, tokens)
    got = our_logits(config, params, tokens)
    assert np.abs(expected).max() > 1.0, "the test model is too close to zero to tell anything"
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4, err_msg=name)


def test_later_tokens_do_not_change_earlier_logits(family_model):
    _, _, _, config, params, _ = family_model
    rng = np.random.default_rng(1)
    a = rng.integers(0, config.vocab_size, LENGTH)
    b = a.copy()
    b[10:] = rng.integers(0, config.vocab_size, LENGTH - 10)
    la, lb = our_logits(config, params, np.stack([a, b]))
    np.testing.assert_allclose(la[:10], lb[:10], atol=1e-5)
    assert np.abs(la[10:] - lb[10:]).max() > 1e-3


def test_packed_segments_equal_separate_examples(family_model):
    """Two examples packed in one row (segment ids, restarted positions) give their own logits."""
    _, _, _, config, params, _ = family_model
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, config.vocab_size, 7), rng.integers(0, config.vocab_size, 9)
    pad = LENGTH - 16
    row = np.concatenate([a, b, np.zeros(pad, int)])
    positions = np.concatenate([np.arange(7), np.arange(9), np.zeros(pad, int)])
    segments = np.concatenate([np.full(7, 1), np.full(9, 2), np.zeros(pad, int)])
    other = rng.integers(0, config.vocab_size, LENGTH)  # a second row of one example: rows are independent
    packed = our_logits(config, params, np.stack([row, other]), np.stack([positions, np.arange(LENGTH)]),
                        np.stack([segments, np.ones(LENGTH, int)]))
    separate = our_logits(config, params, right_padded(a, b))
    np.testing.assert_allclose(packed[0, :7], separate[0, :7], atol=1e-5)
    np.testing.assert_allclose(packed[0, 7:16], separate[1, :9], atol=1e-5)
    np.testing.assert_allclose(packed[1], our_logits(config, params, np.stack([other, other]))[0], atol=1e-5)


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
