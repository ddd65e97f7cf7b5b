"""Completion recovers held-out rows of planted matrices; the batched protocol equals a loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from forgetting_jax.analysis import fits, planted
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import metrics, protocol, registry
from forgetting_jax.predict.methods import CompletionConfig, fold_in

NOISE = 0.2
M, N = 40, 800


def _run(z, methods, test_idx=None, **kw):
    test_idx = np.arange(0, M, 4) if test_idx is None else test_idx
    kw.setdefault("seeds", 3)
    run = protocol.run_protocol(z, test_idx, registry.build_methods(methods, CompletionConfig(
        rank=3)), log=lambda s: None, **kw)
    return run, protocol.summarize(run, [f"t{i}" for i in range(z.shape[0])])


@pytest.mark.parametrize("kind,method", [("additive", "additive"), ("rank1", "multiplicative"),
                                         ("low_rank", "als"), ("additive", "knn")])
def test_completion_reaches_noise_level(kind, method):
    z = planted.planted_matrix(M, N, kind=kind, rank=3, noise=NOISE, seed=0)
    _, res = _run(z, [method, "train_mean"])
    assert res[method]["rmse"] < 1.25 * NOISE
    assert res[method]["rmse"] < res["train_mean"]["rmse"]
    assert res[method]["spearman"] > 0.8


def test_missing_entries_are_handled():
    z = planted.planted_matrix(M, N, kind="low_rank", rank=3, noise=NOISE, seed=1, missing=0.1)
    _, res = _run(z, ["additive", "als", "knn", "random"])
    assert res["als"]["rmse"] < 1.3 * NOISE
    for name, entry in res.items():
        assert np.isfinite(entry["rmse"]), name


def test_k_larger_than_observable_columns_is_an_error():
    z = planted.planted_matrix(M, N, kind="additive", seed=2)
    z[4, 20:] = np.nan
    with pytest.raises(protocol.ProtocolError, match="test row 4 has only 20 observed"):
        _run(z, ["additive"], k=30)


def test_select_test_tasks():
    tasks = [f"t{i}" for i in range(10)]
    assert list(protocol.select_test_tasks(tasks, ["t3", "t1"])) == [1, 3]
    a = protocol.select_test_tasks(tasks, test_fraction=0.3, split_seed=5)
    assert len(a) == 3 and list(a) == list(protocol.select_test_tasks(tasks, test_fraction=0.3,
                                                                      split_seed=5))
    with pytest.raises(protocol.ProtocolError, match="unknown test task"):
        protocol.select_test_tasks(tasks, ["nope"])


@pytest.mark.slow
def test_batched_protocol_equals_plain_loop():
    # The shapes of test_completion_reaches_noise_level (test rows, seeds, k), whose compiled als and
    # knn completions the batched run reuses; two of the test rows have missing entries.
    m, n, k = M, N, 30
    z = planted.planted_matrix(m, n, kind="forgetting", noise=0.3, seed=3)
    test_idx = np.arange(0, M, 4)
    z[test_idx[[1, 2]], :40] = np.nan  # test rows with missing entries
    kw = dict(test_idx=test_idx, seeds=3, k=k)
    run, _ = _run(z, ["als", "knn"], **kw)
    # The same protocol one pair per compiled call, streamed in column chunks.
    single, _ = _run(z, ["als", "knn"], pair_batch=1, chunk_columns=256, **kw)
    for name in ("als", "knn"):
        for key in metrics.METRICS:
            np.testing.assert_allclose(run["methods"][name]["metrics"][key],
                                       single["methods"][name]["metrics"][key], atol=2e-4,
                                       err_msg=f"{name} {key}")
    # A plain per-task loop of the als completion, with no vmap and no jit.
    rows = np.ones(m, bool)
    rows[test_idx] = False
    method = registry.build_methods(["als"], CompletionConfig(rank=3))["als"]
    fit, prior = method.fit(ColumnChunks(z, rows))
    for p, (t, s) in enumerate(zip(run["pairs"]["task"], run["pairs"]["seed"])):
        key = protocol.pair_keys(0, np.array([s]), np.array([t]))[0]
        truth = jnp.asarray(z[t])
        obs = protocol.draw_columns(key, jnp.isfinite(truth), k)
        row = fold_in(fit, prior, obs, truth[obs])
        pred = fits.reconstruct(fit, row[None, :])[0]
        ev = np.asarray(metrics.eval_mask(truth, obs))
        want = np.sqrt(np.mean((np.asarray(pred) - z[t])[ev] ** 2))
        assert abs(run["methods"]["als"]["metrics"]["rmse"][p] - want) < 1e-4


def test_draws_are_distinct_valid_and_shared_across_methods():
    valid = jnp.asarray(np.random.default_rng(0).random(500) < 0.5)
    idx = np.asarray(protocol.draw_columns(jax.random.PRNGKey(3), valid, 30))
    assert len(set(idx.tolist())) == 30 and np.asarray(valid)[idx].all()


def test_row_metrics_match_reference_formulas():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=400).astype(np.float32)
    pred = np.round(truth + rng.normal(size=400), 1).astype(np.float32)  # ties in predictions
    ev = rng.random(400) < 0.8
    out = jax.device_get(metrics.row_metrics(jnp.asarray(pred), jnp.asarray(truth),
                                             jnp.asarray(ev), jnp.arange(400), 0.0, 20))
    t, p = truth[ev], pred[ev]
    assert np.isclose(out["rmse"], np.sqrt(np.mean((p - t) ** 2)), atol=1e-5)
    tp, fp, fn = ((t > 0) & (p > 0)).sum(), ((t <= 0) & (p > 0)).sum(), ((t > 0) & (p <= 0)).sum()
    assert np.isclose(out["f1"], 2 * tp / (2 * tp + fp + fn))
    assert np.isclose(out["precision"], tp / (tp + fp))
    assert np.isclose(out["recall"], tp / (tp + fn))
    u = sps.mannwhitneyu(p[t > 0], p[t <= 0]).statistic
    assert np.isclose(out["auc"], u / ((t > 0).sum() * (t <= 0).sum()), atol=1e-5)
    assert np.isclose(out["spearman"], sps.spearmanr(p, t).statistic, atol=1e-5)
    top_true = set(np.argsort(-t)[:20])
    assert np.isclose(out["precision_at_k"],
                      len(top_true & set(np.argsort(-p, kind="stable")[:20])) / 20, atol=0.051)


def test_knn_dense_and_masked_chunk_paths_agree():
    from forgetting_jax.predict.methods import _knn_chunk

    rng = np.random.default_rng(5)
    z = jnp.asarray(rng.normal(size=(12, 64)), jnp.float32)
    rows = jnp.asarray(np.arange(12) % 4 != 0)
    args = (z, jnp.ones(64), rows, jnp.float32(0.2), jnp.asarray(rng.normal(size=12), jnp.float32),
            jnp.asarray(rng.normal(size=64), jnp.float32), jnp.zeros(3),
            jnp.asarray(rng.random((3, 12)), jnp.float32))
    np.testing.assert_allclose(_knn_chunk(*args, finite=True), _knn_chunk(*args, finite=False),
                               atol=1e-5)
