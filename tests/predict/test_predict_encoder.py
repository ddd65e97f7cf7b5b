"""rep_dot's trainable encoder (predict/encoder.py): the split forward is the decoder's forward, and
only the trainable part of top:K gets gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.experiment.choices import parse_rep_dot_encoder
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, init_params
from forgetting_jax.predict import encoder as enc

CONFIG = ModelConfig(family="llama", vocab_size=61, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64, tie_embeddings=False)


def _batch():
    rng = np.random.default_rng(0)
    lengths = np.array([5, 9, 12])
    tokens = np.zeros((3, 16), np.int32)
    seg = np.zeros((3, 16), np.int32)
    pos = np.zeros((3, 16), np.int32)
    for r, n in enumerate(lengths):
        tokens[r, :n] = rng.integers(1, 61, n)
        seg[r, :n] = 1
        pos[r, :n] = np.arange(n)
    return {"tokens": jnp.asarray(tokens), "segment_ids": jnp.asarray(seg), "positions": jnp.asarray(pos)}, lengths


@pytest.mark.parametrize("full,k", [(True, 3), (False, 1)])
def test_split_forward_is_the_decoder_forward(full, k):
    params, _ = init_params(CONFIG, jax.random.key(1))
    batch, lengths = _batch()
    want = Decoder(CONFIG).apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
    trainable, frozen = enc.split_params(params, 3, k, full)
    got = enc.last_hidden(CONFIG, trainable, frozen, full, batch)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want)[np.arange(3), lengths - 1], atol=1e-5)
    merged = enc.merge_params(trainable, frozen)
    assert jax.tree.structure(merged) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_top_k_trains_only_the_top_layers():
    params, _ = init_params(CONFIG, jax.random.key(1))
    batch, _ = _batch()
    trainable, frozen = enc.split_params(params, 3, 1, False)
    assert set(trainable) == {"layers", "final_norm"} and set(frozen) == {"embedding", "lower_layers", "lm_head"}
    assert jax.tree.leaves(trainable["layers"])[0].shape[0] == 1
    assert jax.tree.leaves(frozen["lower_layers"])[0].shape[0] == 2
    grads = jax.grad(lambda t: enc.last_hidden(CONFIG, t, frozen, False, batch).sum())(trainable)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads["layers"]))
    full_t, full_f = enc.split_params(params, 3, 3, True)
    assert "embedding" in full_t and set(full_f) == {"lm_head"}


def test_encoder_names():
    assert parse_rep_dot_encoder("frozen") == ("frozen", None)
    assert parse_rep_dot_encoder("full") == ("full", None)
    assert parse_rep_dot_encoder("top:2") == ("top", 2)
    for bad in ("top:0", "top:x", "half"):
        with pytest.raises(ValueError, match="frozen, full, top:K"):
            parse_rep_dot_encoder(bad)
    with pytest.raises(ValueError, match=r"has 3 layer\(s\)"):
        enc.trained_layers(4, 3)
