"""The packed, batched scorer equals a naive one-example-at-a-time reference, and compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from forgetting_jax.models import lm_head
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.decoder import Decoder, init_params, unembedding
from forgetting_jax.score.scorer import Scorer, ScoreShape

CONFIG = ModelConfig(family="llama", vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=64)


@pytest.fixture(scope="module")
def params():
    params, _ = init_params(CONFIG, jax.random.key(0))
    return params


def random_examples(seed, n, max_len=40):
    rng = np.random.default_rng(seed)
    examples = [(np.array([5, 7], np.int32), np.array([False, True]))]  # a single scored token
    for _ in range(n - 1):
        length = int(rng.integers(2, max_len))
        ids = rng.integers(0, CONFIG.vocab_size, length).astype(np.int32)
        if rng.random() < 0.5:  # lm: every token after the first
            mask = np.ones(length, bool)
        else:  # chat: only a trailing response
            mask = np.zeros(length, bool)
            mask[int(rng.integers(1, length)):] = True
        mask[0] = False
        examples.append((ids, mask))
    return examples


@jax.jit
def _naive_logp(params, ids_1xL):
    hidden = Decoder(CONFIG).apply({"params": params}, ids_1xL)
    return jax.nn.log_softmax(lm_head.logits(hidden, unembedding(params, CONFIG))[0], axis=-1)


def naive_nll(params, ids, mask, padded_length=64):
    """One example alone, no packing: right-padded to one length (causal attention: the padding
    after the example cannot change its positions), so the reference compiles once."""
    padded = np.zeros((1, padded_length), np.int32)
    padded[0, :len(ids)] = ids
    logp = _naive_logp(params, jnp.asarray(padded))
    token_logp = np.asarray(logp)[np.arange(len(ids) - 1), ids[1:]]
    return float(-(token_logp * mask[1:]).sum() / mask[1:].sum()), int(mask[1:].sum())


@pytest.mark.slow  # the one-example reference compiles its own forward pass (~15 s on 2 cores)
def test_matches_one_at_a_time_reference(params):
    examples = random_examples(0, 23)
    scorer = Scorer(CONFIG, params)
    nll, count, stats = scorer.score(examples, ScoreShape(rows_per_batch=3, row_length=64, max_segments=4))
    expected = [naive_nll(params, ids, mask) for ids, mask in examples]
    np.testing.assert_allclose(nll, [e[0] for e in expected], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(count, [e[1] for e in expected])
    assert stats.examples == len(examples) and stats.batches > 1


def test_compiles_once_for_many_batches_datasets_and_weights(params):
    shape = ScoreShape(rows_per_batch=2, row_length=48, max_segments=8)
    Scorer(CONFIG, params).score(random_examples(1, 30), shape)
    other_weights = jax.tree.map(lambda x: x * 0.5, params)
    scorer = Scorer(CONFIG, other_weights)
    scorer.score(random_examples(2, 11), shape)
    assert scorer.compiled_step(shape)._cache_size() == 1


def test_no_scored_token_gives_nan_and_zero_count(params):
    examples = [(np.array([3, 4, 5], np.int32), np.array([False, False, False])),
                (np.array([3, 4, 5], np.int32), np.array([False, True, True]))]
    nll, count, _ = Scorer(CONFIG, params).score(examples)
    assert np.isnan(nll[0]) and count[0] == 0
    assert np.isfinite(nll[1]) and count[1] == 2


def test_data_parallel_mesh_gives_same_scores(params):
    examples = random_examples(3, 40)
    shape = ScoreShape(rows_per_batch=8, row_length=48, max_segments=8)
    single, _, _ = Scorer(CONFIG, params).score(examples, shape)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded, _, _ = Scorer(CONFIG, params, mesh=mesh).score(examples, shape)
    np.testing.assert_allclose(sharded, single, atol=1e-6)


def test_bf16_scores_close_to_fp32(params):
    examples = random_examples(4, 12)
    fp32, _, _ = Scorer(CONFIG, params).score(examples)
    bf16_config = CONFIG.replace(param_dtype="bfloat16", dtype="bfloat16")
    bf16, _, _ = Scorer(bf16_config, params).score(examples)
    np.testing.assert_allclose(bf16, fp32, rtol=0.03)


def test_embed_is_the_mean_hidden_state_of_each_example(params):
    """Packed several to a row, each example's mean and last-token final hidden states equal
    those of the example run alone."""
    examples = random_examples(5, 9)
    scorer = Scorer(CONFIG, params)
    shape = ScoreShape(rows_per_batch=2, row_length=64, max_segments=4)
    embeddings, _ = scorer.embed(examples, shape)
    means, lasts, _ = scorer.represent(examples, shape)
    np.testing.assert_array_equal(means, embeddings)
    hidden_fn = jax.jit(lambda p, ids_1xL: Decoder(CONFIG).apply({"params": p}, ids_1xL)[0])
    for (ids, _), got, last in zip(examples, embeddings, lasts):
        padded = np.zeros((1, 64), np.int32)  # right-padded: causal attention keeps the example's states
        padded[0, :len(ids)] = ids
        hidden = np.asarray(hidden_fn(params, jnp.asarray(padded)))[:len(ids)]
        np.testing.assert_allclose(got, hidden.mean(0), atol=1e-5)
        np.testing.assert_allclose(last, hidden[-1], atol=1e-5)
        assert not np.allclose(last, hidden[-2], atol=1e-3)  # the last token, not its neighbour


def test_score_and_represent_is_score_and_represent_in_one_pass(params):
    examples = random_examples(6, 11)
    scorer = Scorer(CONFIG, params)
    shape = ScoreShape(rows_per_batch=2, row_length=64, max_segments=4)
    nll, count, mean, last, _ = scorer.score_and_represent(examples, shape)
    nll_alone, count_alone, _ = scorer.score(examples, shape)
    mean_alone, last_alone, _ = scorer.represent(examples, shape)
    np.testing.assert_allclose(nll, nll_alone, rtol=1e-6)
    np.testing.assert_array_equal(count, count_alone)
    np.testing.assert_allclose(mean, mean_alone, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last, last_alone, rtol=1e-6, atol=1e-6)
