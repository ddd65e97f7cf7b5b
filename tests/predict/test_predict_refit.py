"""Refit per pair: recovers held-out rows of planted matrices, tends to the fit-once fold-in."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.analysis import planted
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import refit, registry
from forgetting_jax.predict.methods import Batch, CompletionConfig

CONFIG = CompletionConfig(rank=3)
K = 30


def _planted(m, n, kind, noise, seed):
    """Signal [m, n] (mu + a_i + b_j, plus a rank-3 part for kind "biased_low_rank") and noise."""
    rng = np.random.default_rng(seed)
    signal = 0.5 + rng.normal(0, 1, (m, 1)) + rng.normal(0, 1, (1, n))
    if kind == "biased_low_rank":
        signal = signal + rng.normal(0, 1, (m, 3)) @ rng.normal(0, 1, (3, n))
    z = signal + noise * rng.standard_normal((m, n))
    return signal.astype(np.float32), z.astype(np.float32)


def _fold_in(name, z_train, idx, val):
    """The protocol's prediction: one fit on the training rows, then the row folded in."""
    method = registry.build_methods([name], CONFIG)[name]
    chunks = ColumnChunks(z_train)
    state = method.fit(chunks)
    batch = Batch(np.array([0]), jax.random.PRNGKey(0)[None],
                  jnp.asarray(idx, jnp.int32)[None], jnp.asarray(val, jnp.float32)[None])
    return np.asarray(method.complete(state, batch, chunks)[0])


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.mark.parametrize("kind,method", [("additive", "additive"), ("additive", "knn"),
                                         ("biased_low_rank", "als")])
def test_refit_recovers_a_held_out_row(kind, method):
    noise = 0.1
    signal, z = _planted(61, 400, kind, noise, seed=0)
    idx = np.random.default_rng(1).choice(400, K, replace=False)
    unobserved = np.setdiff1d(np.arange(400), idx)
    pred = refit.refit_predict(method, z[:60], idx, z[60, idx], CONFIG)
    assert pred.shape == (400,)
    err = _rms(pred[unobserved] - signal[60, unobserved])
    assert err < 0.8 * noise, err  # against the noiseless row: near the noise-free truth
    assert err < 0.2 * _rms(signal[60] - z[:60].mean(0)), err  # far better than the mean row


def test_refit_tends_to_the_fold_in_with_many_training_rows():
    # The refit differs from the protocol's fit-once fold-in only by the test row's k entries
    # in the fit, which matter less and less as training rows are added.
    n = 300
    idx = np.random.default_rng(2).choice(n, K, replace=False)
    unobserved = np.setdiff1d(np.arange(n), idx)
    gaps = {}
    for m in (20, 320):
        z = planted.planted_matrix(m + 1, n, kind="forgetting", rank=3, noise=0.3, seed=m)
        for name in ("additive", "als", "knn"):
            ref = refit.refit_predict(name, z[:m], idx, z[m, idx], CONFIG)
            fold = _fold_in(name, z[:m], idx, z[m, idx])
            gaps[name, m] = (_rms((ref - fold)[unobserved])
                             / _rms((fold - z[m])[unobserved]))
    for name in ("additive", "als", "knn"):
        assert gaps[name, 320] < 0.06, (name, gaps)
    assert gaps["als", 320] < 0.25 * gaps["als", 20], gaps  # the one free enough to move


def test_refit_rejects_bad_inputs():
    z = np.zeros((5, 10), np.float32)
    with pytest.raises(ValueError, match="supports"):
        refit.refit_predict("train_mean", z, [0, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="distinct"):
        refit.refit_predict("additive", z, [1, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="distinct"):
        refit.refit_predict("additive", z, [0, 10], [0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        refit.refit_predict("additive", z, [0, 1], [0.0, np.nan])
    aug = refit.augment(z, [3, 7], [1.0, 2.0])
    assert aug.shape == (6, 10) and np.isfinite(aug[5]).sum() == 2 and aug[5, 7] == 2.0
