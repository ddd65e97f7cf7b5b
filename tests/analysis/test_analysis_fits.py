"""Fits recover the R^2 of planted matrices, with and without missing entries and chunking."""

import numpy as np
import pytest

from forgetting_jax.analysis import fits, planted
from forgetting_jax.analysis.chunks import ColumnChunks

NOISE = 0.2


def _planted_r2(kind, m=30, n=600, rank=3, seed=0):
    clean = planted.planted_matrix(m, n, kind=kind, rank=rank, noise=0.0, seed=seed)
    noisy = planted.planted_matrix(m, n, kind=kind, rank=rank, noise=NOISE, seed=seed)
    # Same seed: identical signal, so the noise is the difference.
    return noisy, 1.0 - np.var(noisy - clean) / np.var(noisy)


def _with_missing(z, frac, seed=1):
    z = z.copy()
    z[np.random.default_rng(seed).random(z.shape) < frac] = np.nan
    return z


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_additive_fit_recovers_planted_r2(missing):
    z, r2 = _planted_r2("additive")
    chunks = ColumnChunks(_with_missing(z, missing))
    fit = fits.fit_additive(chunks, reg=1e-3)
    assert abs(fits.fit_r2(fit, chunks) - r2) < 0.01


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_multiplicative_fit_recovers_planted_r2(missing):
    z, r2 = _planted_r2("rank1")
    chunks = ColumnChunks(_with_missing(z, missing))
    fit = fits.fit_multiplicative(chunks)
    assert abs(fits.fit_r2(fit, chunks) - r2) < 0.01
    svd = fits.truncated_svd(chunks, max_rank=3)
    assert abs(svd.r2_K[0] - fits.fit_r2(fit, chunks)) < 2e-3


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_svd_recovers_planted_rank3(missing):
    z, r2 = _planted_r2("low_rank", rank=3)
    chunks = ColumnChunks(_with_missing(z, missing))
    svd = fits.truncated_svd(chunks, max_rank=4)
    assert svd.exact == (missing == 0.0)
    assert abs(svd.r2_K[2] - r2) < 0.015
    assert svd.r2_K[1] < r2 - 0.02  # rank 2 misses a planted component
    assert np.all(np.diff(svd.r2_K) > -1e-4)


def test_exact_svd_matches_numpy():
    z = planted.planted_matrix(30, 600, kind="forgetting", noise=0.3, seed=3)
    svd = fits.truncated_svd(ColumnChunks(z), max_rank=5)
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    sse = (s ** 2).sum() - np.cumsum(s[:5] ** 2)
    np.testing.assert_allclose(svd.r2_K, 1 - sse / z.size / z.var(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(svd.s_K), s[:5], rtol=1e-4)
    assert np.all(np.asarray(svd.v_NxK).sum(0) > 0)


def test_chunked_fit_equals_single_chunk():
    z = _with_missing(planted.planted_matrix(30, 600, kind="forgetting", seed=4), 0.05)
    one = fits.fit_factor_model(ColumnChunks(z), rank=2, biases=True, max_iters=10, tol=0)
    many = fits.fit_factor_model(ColumnChunks(z, chunk_columns=256), rank=2, biases=True,
                                 max_iters=10, tol=0)
    np.testing.assert_allclose(one.rows_MxD, many.rows_MxD, atol=1e-4)
    np.testing.assert_allclose(one.cols_NxD, many.cols_NxD, atol=1e-4)


def test_usable_rows_and_all_missing_column():
    z = planted.planted_matrix(30, 600, kind="additive", noise=0.1, seed=5)
    z[:, 7] = np.nan
    rows = np.ones(30, bool)
    rows[3] = False
    z[3] = np.nan  # an unusable row may be anything
    chunks = ColumnChunks(z, rows)
    fit = fits.fit_additive(chunks)
    assert np.all(np.isfinite(np.asarray(fit.cols_NxD)))
    assert float(fit.rows_MxD[3, 0]) == 0.0
    mom = fits.moments(chunks)
    assert np.isclose(float(mom.col_mean_N[7]), mom.mean)


@pytest.mark.parametrize("rank,biases", [(0, True), (1, False), (3, True)])
def test_gram_route_equals_sweeps(rank, biases):
    z = planted.planted_matrix(30, 600, kind="forgetting", noise=0.3, seed=6)
    rows = np.ones(30, bool)
    rows[[2, 5]] = False
    z[2, :10] = np.nan  # unusable rows may miss entries without leaving the dense route
    kw = dict(rank=rank, biases=biases, reg=0.5, max_iters=15, tol=0.0)
    a = fits.fit_factor_model(ColumnChunks(z, rows), **kw)
    b = fits.fit_factor_model(ColumnChunks(z, rows, chunk_columns=256), route="sweeps", **kw)
    assert a.iterations == b.iterations == 15
    np.testing.assert_allclose(a.rows_MxD, b.rows_MxD, atol=2e-3)  # the same 15 sweeps
    np.testing.assert_allclose(float(a.sse_M.sum()), float(b.sse_M.sum()), rtol=2e-2)
