"""`lgmf`, `lgmf_additive`: the final code's logistic matrix factorization (post_process/my_mf.py of
AuCson/low-rank-forgetting), refitted for every test row."""

import jax.numpy as jnp
import numpy as np
import pytest

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import protocol, registry
from forgetting_jax.predict.lgmf import LgmfConfig, LgmfMethod, sub_batch
from forgetting_jax.predict.methods import Batch


def _sigmoid(t):
    return 1.0 / (1 + np.exp(-t))


def _logistic_mf(y, k, mask, eta=0.001, nu=0.1, max_iter=5000, seed=0, init_std=0.005):
    """my_mf.LogisticMF (printing left out)."""
    m, n = y.shape
    w = np.random.default_rng(seed).normal(0, init_std, (m, k))
    h = np.random.default_rng(seed + 1).normal(0, init_std, (k, n))
    ym = y.copy()
    ym[mask == False] = 0  # noqa: E712
    for _ in range(max_iter):
        dlh = np.dot(w.T, ym - mask * _sigmoid(np.dot(w, h))) - nu * h
        h = h + eta * dlh
        dlw = np.dot(ym - mask * _sigmoid(np.dot(w, h)), h.T) - nu * w
        w = w + eta * dlw
    return w, h


def _logistic_mf_additive(y, mask, eta=0.001, nu=0.1, max_iter=5000, seed=0):
    """my_mf.LogisticMFAdditive (printing left out)."""
    m, n = y.shape
    w = np.random.default_rng(seed).normal(0, 1, m)
    h = np.random.default_rng(seed + 1).normal(0, 1, n)
    ym = y.copy()
    ym[mask == False] = 0  # noqa: E712
    for _ in range(max_iter):
        dlh = np.sum(ym - mask * _sigmoid(w.reshape((-1, 1)) + h.reshape((1, -1))), 0) - nu * h
        h = h + eta * dlh
        dlw = np.sum(ym - mask * _sigmoid(w.reshape((-1, 1)) + h.reshape((1, -1))), 1) - nu * w
        w = w + eta * dlw
    return w, h


def _reference_logits(train, test_row, obs_idx, additive, **kw):
    """matrix_factorization_direct for one test row: the training rows (all observed) stacked with
    the test row observed at obs_idx; the last row of the fitted logits."""
    y = np.concatenate([train, test_row[None]]).astype(np.float64)
    mask = np.ones_like(y, bool)
    mask[-1] = False
    mask[-1, obs_idx] = True
    if additive:
        w, h = _logistic_mf_additive(y, mask, **kw)
        return (w[:, None] + h[None, :])[-1]
    w, h = _logistic_mf(y, 5, mask, **kw)
    return (w @ h)[-1]


def _planted(m, n, seed=0, offset=-0.5):
    """Bernoulli draws of sigmoid(rank-2 logits + row and column terms): binary, low rank."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(m, 2)), 1.5 * rng.normal(size=(n, 2))
    a, b = 0.5 * rng.normal(size=m), rng.normal(size=n)
    logits = u @ v.T + a[:, None] + b[None, :] + offset
    return (rng.random((m, n)) < _sigmoid(logits)).astype(np.float32)


@pytest.mark.parametrize("additive", [False, True])
@pytest.mark.parametrize("eta", [0.001, 0.01])  # 0.01: 300 steps take lgmf's logits from 1e-4 to a few units
def test_equals_the_final_code_on_a_small_matrix(additive, eta):
    """Every pair's refit equals LogisticMF / LogisticMFAdditive run on the stacked matrix, a
    repeated observed column included (one observed entry)."""
    m, n, k, iters = 13, 80, 10, 300
    z = _planted(m, n, seed=1)
    test = np.array([4, 9])
    rows = np.ones(m, bool)
    rows[test] = False
    rng = np.random.default_rng(2)
    obs_idx = np.stack([rng.choice(n, k, replace=False) for _ in range(3)]).astype(np.int32)
    obs_idx[1, 1] = obs_idx[1, 0]
    task = np.array([4, 9, 4])
    obs_val = z[task[:, None], obs_idx]
    method = LgmfMethod(LgmfConfig(iters=iters, eta=eta), additive=additive)
    chunks = ColumnChunks(z, rows)
    state = method.fit(chunks)
    batch = Batch(task, None, jnp.asarray(obs_idx), jnp.asarray(obs_val))
    logits = np.asarray(method.logits(state, batch))
    probs = np.asarray(method.complete(state, batch, chunks))
    for i in range(len(task)):
        ref = _reference_logits(z[rows], z[task[i]], obs_idx[i], additive, max_iter=iters, eta=eta)
        np.testing.assert_allclose(logits[i], ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(probs[i], _sigmoid(ref), atol=1e-6, rtol=0)
    if eta == 0.01 or additive:
        assert np.abs(logits).max() > 1.0
    assert np.abs(logits[0] - logits[2]).max() > 1e-6  # the observed columns matter


def test_sub_batches_cover_the_batch_equally():
    assert sub_batch(10, 11, 100) == 10
    assert sub_batch(10, 1000, 100_000, budget=3 * 6 * 4 * 1000 * 100_000) == 3  # 4 sub-batches, 3 3 3 1
    assert sub_batch(7, 1000, 10**9) == 1


def test_beats_train_mean_on_a_planted_binary_matrix():
    """On a binary matrix of rank-2 logits plus row and column terms, lgmf beats train_mean's AUC
    (the same row for every task). lgmf_additive orders a test row's unobserved columns by their
    training rate, as train_mean does (its row term shifts the row without reordering it), so its
    AUC ties train_mean's; its row term, fitted to the k observed entries, wins on F1."""
    z = _planted(40, 300)
    test_idx = np.arange(32, 40)
    config = LgmfConfig(iters=300, eta=0.01)
    methods = registry.build_methods(["lgmf", "lgmf_additive", "train_mean"], lgmf_config=config)
    assert methods["lgmf"].config == config and methods["lgmf_additive"].additive
    run = protocol.run_protocol(z, test_idx, methods, k=30, seeds=2, threshold=0.5, log=lambda _: None)
    summary = protocol.summarize(run, [str(i) for i in range(40)], per_task=False)
    auc = {name: entry["auc"] for name, entry in summary.items()}
    f1 = {name: entry["pooled"]["f1"] for name, entry in summary.items()}
    assert auc["lgmf"] > auc["train_mean"] + 0.1, auc
    assert auc["lgmf_additive"] == pytest.approx(auc["train_mean"], abs=0.005), auc
    assert f1["lgmf"] > f1["train_mean"] + 0.1 and f1["lgmf_additive"] > f1["train_mean"] + 0.05, f1


def test_defaults_and_a_non_binary_matrix():
    """The final code's settings by default; a matrix with other values than 0/1 is refused."""
    methods = registry.build_methods(["lgmf", "lgmf_additive"])
    assert methods["lgmf"].config == LgmfConfig(rank=5, eta=0.001, nu=0.1, iters=5000, init_std=0.005, seed=0)
    assert methods["lgmf"].name == "lgmf" and methods["lgmf_additive"].name == "lgmf_additive"
    z = np.random.default_rng(0).normal(size=(10, 50)).astype(np.float32)
    for name in ("lgmf", "lgmf_additive"):
        with pytest.raises(ValueError, match=f"{name} needs a binary"):
            registry.check_methods([name], {"Z": z})
        with pytest.raises(ValueError, match=f"method {name} needs a binary"):
            methods[name].fit(ColumnChunks(z, np.arange(10) < 8))
