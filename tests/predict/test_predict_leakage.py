"""No leakage: a method's predictions for a test row depend on the training rows and on that
row's k observed entries only. Perturbing every other entry of the test rows (the values the
metrics are computed on) leaves every method's predictions unchanged."""

import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.analysis import planted
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import protocol, registry
from forgetting_jax.predict.methods import Batch, CompletionConfig
from forgetting_jax.predict.rep_dot import RepDotConfig

M, N, S, D, K, SEEDS = 14, 240, 5, 6, 12, 3
TEST = np.array([2, 7, 11])


def _representations(rng):
    return {"task_embeddings": rng.normal(size=(M, D)).astype(np.float32),
            "example_embeddings": rng.normal(size=(N, D)).astype(np.float32),
            "task_example_last_hidden": rng.normal(size=(M, S, D)).astype(np.float32),
            "task_example_count": rng.integers(1, S + 1, size=M).astype(np.int32),
            "example_last_hidden": rng.normal(size=(N, D)).astype(np.float32)}


def _batch(z, sampling):
    """The protocol's pairs (test task x seed) and their observed columns, as run_protocol draws them."""
    pos = np.repeat(np.arange(len(TEST)), SEEDS)
    seed = np.tile(np.arange(SEEDS), len(TEST))
    keys = protocol.pair_keys(0, seed, TEST[pos])
    truth = jnp.asarray(z[TEST])
    if sampling == "uniform":
        idx, val = protocol._draw_batch(keys, truth, jnp.asarray(pos), k=K)
    else:
        idx = protocol.reference_columns(seed, N, K)
        val = jnp.asarray(np.take_along_axis(z[TEST][pos], idx, axis=1))
        idx = jnp.asarray(idx)
    return Batch(TEST[pos], keys, idx, val), np.asarray(idx), pos


def _predictions(z, names, reps, sampling):
    rows = np.ones(M, bool)
    rows[TEST] = False
    chunks = ColumnChunks(z, rows, chunk_columns=100)  # several chunks, the last one padded
    batch, _, _ = _batch(z, sampling)
    methods = registry.build_methods(names, CompletionConfig(rank=2), reps, RepDotConfig(steps=60, eval_every=20))
    return {name: np.asarray(m.complete(m.fit(chunks), batch, chunks)) for name, m in methods.items()}


@pytest.mark.parametrize("sampling", ["uniform", "reference"])
def test_perturbing_unobserved_test_entries_changes_no_prediction(sampling):
    rng = np.random.default_rng(0)
    z = planted.planted_matrix(M, N, kind="forgetting", noise=0.3, seed=3, missing=0.05)
    z[np.isnan(z)] = 0.0 if sampling == "reference" else np.nan  # reference draws may hit any column
    reps = _representations(rng)
    names = tuple(n for n in registry.KNOWN if n not in registry.BINARY)  # binary ones: the test below
    before = _predictions(z, names, reps, sampling)

    _, idx, pos = _batch(z, sampling)
    perturbed = z.copy()
    for t, row in enumerate(TEST):
        observed = np.unique(idx[pos == t])
        free = np.setdiff1d(np.flatnonzero(np.isfinite(z[row])), observed)
        perturbed[row, free] = rng.normal(5.0, 3.0, size=len(free))  # finite: the draws stay the same
    assert (perturbed != z)[TEST].sum() > 0.8 * len(TEST) * N
    after = _predictions(perturbed, names, reps, sampling)
    for name in names:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


@pytest.mark.parametrize("sampling", ["uniform", "reference"])
def test_binary_methods_see_only_the_observed_entries_of_a_binary_matrix(sampling):
    """The methods of binary matrices only (registry.BINARY), on a binary matrix with missing
    entries: flipping every unobserved entry of the test rows (0 <-> 1) changes no prediction."""
    z = planted.planted_matrix(M, N, kind="forgetting", noise=0.3, seed=3, missing=0.05)
    z = np.where(np.isnan(z), np.nan, (z > np.nanmedian(z)).astype(np.float32))
    z[np.isnan(z)] = 0.0 if sampling == "reference" else np.nan
    names = registry.BINARY
    before = _predictions(z, names, None, sampling)
    _, idx, pos = _batch(z, sampling)
    flipped = z.copy()
    for t, row in enumerate(TEST):
        free = np.setdiff1d(np.flatnonzero(np.isfinite(z[row])), np.unique(idx[pos == t]))
        flipped[row, free] = 1.0 - flipped[row, free]
    assert (flipped != z)[TEST].sum() > 0.8 * len(TEST) * N
    after = _predictions(flipped, names, None, sampling)
    for name in names:
        assert ((before[name] >= 0) & (before[name] <= 1)).all(), name
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_the_check_detects_a_leaking_method():
    """The same check fails for a method that reads the test rows (the oracle row)."""

    class Oracle:
        name = "oracle"

        def fit(self, chunks):
            return None

        def complete(self, state, batch, chunks):
            return jnp.asarray(chunks.z_MxN[batch.task_B])

    z = planted.planted_matrix(M, N, kind="forgetting", noise=0.3, seed=3)
    rows = np.ones(M, bool)
    rows[TEST] = False
    batch, idx, pos = _batch(z, "uniform")
    perturbed = z.copy()
    perturbed[TEST] += 1.0
    for t, row in enumerate(TEST):
        perturbed[row, np.unique(idx[pos == t])] = z[row, np.unique(idx[pos == t])]
    a = Oracle().complete(None, batch, ColumnChunks(z, rows))
    b = Oracle().complete(None, batch, ColumnChunks(perturbed, rows))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
