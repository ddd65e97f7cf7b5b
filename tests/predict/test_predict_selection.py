"""Informative column selection (predict/selection.py): which k upstream examples to score.

The rules read the training rows only: they pick the planted informative columns, never a column
the test row cannot observe, the same ones on every call, whatever the test row holds; the
protocol and `forgetting-jax predict --sampling=leverage` run with them."""

import json

import numpy as np
import pytest

from forgetting_jax import cli
from forgetting_jax.analysis import planted
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import protocol, registry, selection
from forgetting_jax.predict.methods import CompletionConfig

M, N, K = 16, 300, 6
PLANTED = np.array([7, 40, 41, 99, 150, 230])  # the columns with large loadings


def _planted(seed=0, missing=0.0):
    """Small noise plus a task bias everywhere; two latent factors load heavily on PLANTED only."""
    rng = np.random.default_rng(seed)
    z = 0.1 * rng.normal(size=(M, N)) + rng.normal(size=(M, 1))
    factors = rng.normal(size=(M, 2))
    loads = np.zeros((2, N))
    loads[0, PLANTED[:3]] = 3.0 + rng.random(3)
    loads[1, PLANTED[3:]] = 3.0 + rng.random(3)
    z = (z + factors @ loads).astype(np.float32)
    if missing:
        z[rng.random(z.shape) < missing] = np.nan
    return z


@pytest.mark.parametrize("kind", ["variance", "leverage"])
def test_picks_the_planted_columns(kind):
    z = _planted(missing=0.02)
    cols = selection.informative_columns(z, K, kind)
    assert cols.dtype == np.int64 and cols.shape == (K,)
    assert set(cols.tolist()) == set(PLANTED.tolist())
    # streamed in several chunks (the last one padded): the same scores, so the same columns
    chunks = ColumnChunks(z, chunk_columns=64)
    assert len(chunks) > 1
    np.testing.assert_array_equal(selection.informative_columns(chunks, K, kind), cols)
    np.testing.assert_allclose(selection.column_scores(chunks, kind), selection.column_scores(z, kind),
                               rtol=1e-4, atol=1e-6)


def test_leverage_and_variance_definitions():
    z = _planted(seed=1)
    var = selection.column_scores(z, "variance")
    np.testing.assert_allclose(var, np.var(z.astype(np.float64), axis=0, ddof=1), rtol=1e-4)
    lev = selection.column_scores(z, "leverage")
    zc = z.astype(np.float64) - z.mean(0)
    v = np.linalg.svd(zc, full_matrices=False)[2][:5]  # r = min(5, M - 1)
    np.testing.assert_allclose(lev, (v ** 2).sum(0), rtol=1e-3, atol=1e-6)
    assert lev.sum() == pytest.approx(5.0, rel=1e-3)


@pytest.mark.parametrize("kind", ["variance", "leverage", "spread"])
def test_never_an_invalid_column_and_deterministic(kind):
    z = _planted(seed=2)
    valid = np.ones(N, bool)
    valid[PLANTED[:4]] = False  # the test row cannot observe these
    cols = selection.informative_columns(z, K, kind, seed=3, valid_N=valid)
    assert valid[cols].all() and len(set(cols.tolist())) == K
    np.testing.assert_array_equal(selection.informative_columns(z, K, kind, seed=3, valid_N=valid), cols)
    if kind != "spread":
        assert set(PLANTED[4:].tolist()) <= set(cols.tolist())  # the planted ones still observable


def test_ties_are_broken_by_the_seed_and_too_few_columns_fail():
    scores = np.zeros(50)
    scores[[3, 9]] = 1.0
    a = selection.top_columns(scores, 5, seed=0)
    assert a[:2].tolist() in ([3, 9], [9, 3]) and len(set(a.tolist())) == 5
    np.testing.assert_array_equal(selection.top_columns(scores, 5, seed=0), a)
    assert any(not np.array_equal(selection.top_columns(scores, 5, seed=s), a) for s in range(1, 6))
    with pytest.raises(ValueError, match="cannot choose k=3"):
        selection.top_columns(scores, 3, valid_N=np.arange(50) < 2)
    with pytest.raises(ValueError, match="must be one of"):
        selection.informative_columns(np.zeros((3, 4)), 2, "magic")


def test_forecast_columns():
    z = _planted(seed=4)
    z[:, 11] = np.nan  # no finite entry: never chosen, even uniformly
    for select in ("uniform", "variance", "leverage"):
        cols = selection.forecast_columns(z, K, select, seed=5)
        assert cols.shape == (K,) and 11 not in cols and len(set(cols.tolist())) == K
        np.testing.assert_array_equal(selection.forecast_columns(z, K, select, seed=5), cols)
    assert set(selection.forecast_columns(z, K, "leverage", 0).tolist()) == set(PLANTED.tolist())
    assert not np.array_equal(selection.forecast_columns(z, K, "uniform", 0),
                              selection.forecast_columns(z, K, "uniform", 1))
    with pytest.raises(ValueError):
        selection.forecast_columns(z, K, "reference", 0)


def _run(z, test, sampling, methods=("additive", "observed_mean"), seeds=3):
    built = registry.build_methods(methods, CompletionConfig(rank=2), {})
    return protocol.run_protocol(z, test, built, k=K, seeds=seeds, sampling=sampling, chunk_columns=128,
                                 log=lambda _: None)


@pytest.mark.parametrize("sampling", ["variance", "leverage", "spread"])
def test_protocol_columns_ignore_the_test_rows_values(sampling):
    """The protocol's columns come from the training rows and the test rows' observation mask:
    perturbing every value of the test rows changes none of them (and never picks a NaN entry)."""
    z = _planted(seed=6)
    test = np.array([1, 5, 12])
    z[5, PLANTED[:2]] = np.nan  # test row 5 cannot observe two planted columns
    rows = np.ones(M, bool)
    rows[test] = False
    pos, seed = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    cols = protocol.informative_pair_columns(ColumnChunks(z, rows), z[test], pos, seed, K, sampling)
    perturbed = z.copy()
    perturbed[test] += np.random.default_rng(0).normal(size=(3, N)).astype(np.float32) * 5.0
    again = protocol.informative_pair_columns(ColumnChunks(perturbed, rows), perturbed[test], pos, seed, K, sampling)
    np.testing.assert_array_equal(cols, again)
    assert np.isfinite(np.take_along_axis(z[test][pos], cols, axis=1)).all()
    if sampling != "spread":  # the same columns under every seed of a task
        assert all((cols[pos == p] == cols[pos == p][0]).all() for p in range(3))
        assert set(cols[pos == 0][0].tolist()) == set(PLANTED.tolist())


@pytest.mark.parametrize("sampling", ["variance", "leverage"])
def test_protocol_runs_and_records_the_sampling(sampling):
    z = _planted(seed=7, missing=0.01)
    test = np.array([0, 9])
    run = _run(z, test, sampling)
    assert run["settings"]["sampling"] == sampling
    met = run["methods"]["additive"]["metrics"]
    assert np.isfinite(met["rmse"]).all() and (met["n"] > 0).all()
    observed = np.isfinite(z[test]).sum(1)
    np.testing.assert_array_equal(met["n"], np.repeat(observed - K, 3))  # k distinct observed columns
    assert np.ptp(met["rmse"].reshape(2, 3), axis=1).max() == 0.0  # additive: no randomness of its own
    with pytest.raises(protocol.ProtocolError, match="sampling must be one of"):
        _run(z, test, "magic")


def test_predict_command_sampling_leverage(tmp_path, capsys):
    path = tmp_path / "m.npz"
    z = planted.planted_matrix(12, 200, kind="forgetting", noise=0.3, seed=0, missing=0.02)
    np.savez(path, Z=z, tasks=np.array([f"task{i}" for i in range(12)]))
    out = tmp_path / "r.json"
    try:
        cli.run(["forgetting-jax", "predict", f"--matrix={path}", "--test_tasks=task1,task5", "--k=10",
                 "--seeds=2", "--methods=additive,observed_mean", "--sampling=leverage", "--per_task=false",
                 f"--output={out}"])
    except SystemExit as exit_:
        assert not exit_.code, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["settings"]["sampling"] == "leverage"
    assert res["methods"]["additive"]["rmse_std_over_seeds"] == 0.0  # the same columns under every seed
    assert res["methods"]["additive"]["pooled"]["rmse"] > 0
