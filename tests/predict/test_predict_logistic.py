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


def _planted(seed=0, m=M, n=N, offset=-1.0):
    """Bernoulli draws of sigmoid(rank-2 logits + offset): a binary matrix with example associations."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(m, 2)), 1.5 * rng.normal(size=(n, 2))
    return (rng.random((m, n)) < 1 / (1 + np.exp(-(u @ v.T + offset)))).astype(np.float32)


def _pooled(run, name, metric):
    return np.nanmean(run["methods"][name]["metrics"][metric])


def _pooled_rmse(run, name):
    met = run["methods"][name]["metrics"]
    return np.sqrt(met["sq_err"].sum() / met["n"].sum())


# (tasks, examples, logit offset, AUC margin, F1 margin): a square-ish dense one (a third forgotten)
# and a wide sparse one (an eighth forgotten, 50 training rows for 4000 columns: a penalty that
# does not grow with each column's entries over-fits it and loses to train_mean)
SHAPES = [(M, N, -1.0, 0.15, 0.2), (60, 4000, -3.0, 0.08, 0.1)]


@pytest.mark.parametrize("m,n,offset,auc_margin,f1_margin", SHAPES)
def test_beats_the_reference_forecasters_on_a_planted_binary_matrix(m, n, offset, auc_margin, f1_margin):
    z = _planted(0, m, n, offset)
    z[np.random.default_rng(1).random(z.shape) < 0.05] = np.nan  # missing entries are left out
    methods = registry.build_methods(["logistic", "train_mean", "observed_mean"], representations={"Z": z})
    run = protocol.run_protocol(z, np.arange(m - 10, m), methods, k=30, seeds=3, threshold=0.5)
    for other in ("train_mean", "observed_mean"):
        assert _pooled(run, "logistic", "auc") > _pooled(run, other, "auc") + auc_margin
        assert _pooled(run, "logistic", "f1") > _pooled(run, other, "f1") + f1_margin
        assert _pooled_rmse(run, "logistic") < _pooled_rmse(run, other)


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


def test_the_comparison_scores_probabilities_at_one_half_and_records_the_settings():
    z = _planted()
    data = {"Z": z, "tasks": [str(i) for i in range(M)]}
    settings = comparison.ComparisonSettings(methods=("logistic", "train_mean"), seeds=2, per_task=False,
                                             logistic=LogisticConfig(rank=3, steps=100))
    result = comparison.compare(data, TEST, settings, log_fn=lambda line: None)
    assert result["settings"]["threshold"] == 0.5
    assert result["settings"]["logistic"]["rank"] == 3 and result["settings"]["logistic"]["steps"] == 100
    assert result["methods"]["logistic"]["pooled"]["f1"] > result["methods"]["train_mean"]["pooled"]["f1"]


def test_the_threshold_defaults_to_one_half_on_binary_matrices():
    settings = comparison.ComparisonSettings()
    assert comparison.threshold_for({"Z": _planted()}, settings) == 0.5
    assert comparison.threshold_for({"Z": np.full((2, 2), 0.3)}, settings) == 0.0
    assert comparison.threshold_for({"Z": _planted()}, comparison.ComparisonSettings(threshold=0.2)) == 0.2
