"""`logistic`: logistic matrix factorization of binary forgetting matrices (lost answers)."""

import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import comparison, protocol, registry
from forgetting_jax.predict.logistic import LogisticConfig, is_binary
from forgetting_jax.predict.methods import Batch

M, N = 40, 600
TEST = np.arange(30, 40)


def _planted(seed=0):
    """Bernoulli draws of sigmoid(rank-2 logits - 1): a binary matrix with example associations."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(M, 2)), 1.5 * rng.normal(size=(N, 2))
    return (rng.random((M, N)) < 1 / (1 + np.exp(-(u @ v.T - 1.0)))).astype(np.float32)


def _pooled(run, name, metric):
    return np.nanmean(run["methods"][name]["metrics"][metric])


def test_beats_the_reference_forecasters_on_a_planted_binary_matrix():
    z = _planted()
    methods = registry.build_methods(["logistic", "train_mean", "observed_mean"], representations={"Z": z})
    run = protocol.run_protocol(z, TEST, methods, k=30, seeds=3, threshold=0.5)
    for other in ("train_mean", "observed_mean"):
        assert _pooled(run, "logistic", "auc") > _pooled(run, other, "auc") + 0.15
        assert _pooled(run, "logistic", "f1") > _pooled(run, other, "f1") + 0.2
    sq = run["methods"]["logistic"]["metrics"]["sq_err"].sum() / run["methods"]["logistic"]["metrics"]["n"].sum()
    sq_mean = run["methods"]["train_mean"]["metrics"]["sq_err"].sum() / run["methods"]["train_mean"]["metrics"]["n"].sum()
    assert sq < sq_mean


def _fold_in(z, batch):
    rows = np.ones(M, bool)
    rows[TEST] = False
    chunks = ColumnChunks(z, rows)
    method = registry.build_methods(["logistic"], logistic_config=LogisticConfig(steps=200))["logistic"]
    return np.asarray(method.complete(method.fit(chunks), batch, chunks))


def test_predictions_are_probabilities_that_see_only_the_observed_entries():
    z = _planted(1)
    pos = np.repeat(np.arange(len(TEST)), 2)
    keys = protocol.pair_keys(0, np.tile(np.arange(2), len(TEST)), TEST[pos])
    idx, val = protocol._draw_batch(keys, jnp.asarray(z[TEST]), jnp.asarray(pos), k=20)
    batch = Batch(TEST[pos], keys, idx, val)
    before = _fold_in(z, batch)
    assert before.shape == (len(pos), N) and (before >= 0).all() and (before <= 1).all()
    flipped = z.copy()
    observed = np.asarray(idx)
    for t, row in enumerate(TEST):
        free = np.setdiff1d(np.arange(N), observed[pos == t])
        flipped[row, free] = 1.0 - flipped[row, free]  # every unobserved test entry changed, still binary
    np.testing.assert_array_equal(_fold_in(flipped, batch), before)


def test_a_non_binary_matrix_is_refused_by_name():
    z = np.random.default_rng(0).normal(size=(M, N)).astype(np.float32)
    assert not is_binary(z) and is_binary(_planted())
    with pytest.raises(ValueError, match="logistic needs a binary"):
        registry.check_methods(["logistic"], {"Z": z})
    assert "logistic" not in comparison.available_methods({"Z": z, "tasks": [str(i) for i in range(M)]})
    assert "logistic" in comparison.available_methods({"Z": _planted(), "tasks": [str(i) for i in range(M)]})
    method = registry.build_methods(["logistic"])["logistic"]
    with pytest.raises(ValueError, match="logistic needs a binary"):
        method.fit(ColumnChunks(z))


def test_the_threshold_defaults_to_one_half_on_binary_matrices():
    settings = comparison.ComparisonSettings()
    assert comparison.threshold_for({"Z": _planted()}, settings) == 0.5
    assert comparison.threshold_for({"Z": np.full((2, 2), 0.3)}, settings) == 0.0
    assert comparison.threshold_for({"Z": _planted()}, comparison.ComparisonSettings(threshold=0.2)) == 0.2
