"""rep_dot learns a planted bilinear forgetting matrix from representations, never reads the test
rows, ignores padding slots, picks BCE for binary targets, averages vmapped seeds and keeps the
parameters of its best dev step."""

import numpy as np
import pytest

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import baselines, protocol
from forgetting_jax.predict.rep_dot import RepDot, RepDotConfig

M, N, S, D, R = 40, 300, 4, 16, 4
TEST = np.arange(0, M, 5)
ROWS = np.isin(np.arange(M), TEST, invert=True)
FAST = dict(steps=300, lr_head=3e-3)


def _planted(noise=0.05, seed=0):
    """Z[i, j] = -mean((W a_i) * (W u_j)) + noise; task examples a_i + jitter; raw features scaled
    and shifted like hidden states; slots past each task's count are padding (zeros)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(R, D)) / np.sqrt(D)
    a, u = rng.normal(size=(M, D)), rng.normal(size=(N, D))
    score = -(a @ w.T) @ (u @ w.T).T / R
    count = rng.integers(2, S + 1, size=M)
    ex = a[:, None, :] + 0.1 * rng.normal(size=(M, S, D))
    ex[np.arange(S)[None, :] >= count[:, None]] = 0.0
    off = 20.0 * rng.normal(size=D)
    z = score + noise * rng.normal(size=(M, N))
    return (z.astype(np.float32), (30.0 * ex + off).astype(np.float32), count,
            (30.0 * u + off).astype(np.float32), score)


def _fit(z, ex, count, up, rows=ROWS, **kw):
    method = RepDot(ex, count, up, RepDotConfig(**kw))
    state = method.fit(ColumnChunks(z, rows))
    return method, state


def _f1(pred, truth):
    p, t = pred > 0, truth > 0
    return 2 * (p & t).sum() / max(2 * (p & t).sum() + (p & ~t).sum() + (t & ~p).sum(), 1)


def test_planted_rows_are_forecast_from_representations():
    z, ex, count, up, _ = _planted()
    methods = {"rep_dot": RepDot(ex, count, up, RepDotConfig(steps=1000, lr_head=3e-3)),
               "train_mean": baselines.TrainMean(), "random": baselines.RandomForecast()}
    run = protocol.run_protocol(z, TEST, methods, k=10, seeds=1, log=lambda s: None)
    res = protocol.summarize(run, [f"t{i}" for i in range(M)], per_task=False)
    assert res["rep_dot"]["rmse"] < 0.4 * res["train_mean"]["rmse"]
    assert res["rep_dot"]["f1"] > 0.85
    assert res["rep_dot"]["f1"] > res["random"]["f1"] + 0.25
    assert res["rep_dot"]["spearman"] > 0.9


def test_test_rows_are_never_read():
    z, ex, count, up, _ = _planted(seed=1)
    z2 = z.copy()
    z2[TEST] = np.random.default_rng(9).normal(size=(len(TEST), N)) * 100
    z2[TEST[0], :5] = np.nan
    z2[TEST[1]] = np.inf
    m1, s1 = _fit(z, ex, count, up, **FAST)
    m2, s2 = _fit(z2, ex, count, up, **FAST)
    assert set(np.asarray(s1.fit_rows)) | set(np.asarray(s1.dev_rows)) == set(np.flatnonzero(ROWS))
    np.testing.assert_array_equal(np.asarray(m1.predict_rows(s1, TEST)),
                                  np.asarray(m2.predict_rows(s2, TEST)))


def test_padding_slots_are_ignored():
    z, ex, count, up, _ = _planted(seed=2)
    pad = np.arange(S)[None, :] >= count[:, None]
    assert pad.any()
    junk = ex.copy()
    junk[pad] = np.random.default_rng(3).normal(size=(pad.sum(), D)) * 1e3
    junk[pad.nonzero()[0][0], pad.nonzero()[1][0]] = np.nan
    wide = np.concatenate([junk, np.full((M, 2, D), 7.0, np.float32)], axis=1)  # S + 2 slots
    m1, s1 = _fit(z, ex, count, up, **FAST)
    m2, s2 = _fit(z, junk, count, up, **FAST)
    m3, s3 = _fit(z, wide, count, up, **FAST)
    p1 = np.asarray(m1.predict_rows(s1, TEST))
    np.testing.assert_array_equal(p1, np.asarray(m2.predict_rows(s2, TEST)))
    np.testing.assert_allclose(p1, np.asarray(m3.predict_rows(s3, TEST)), rtol=1e-4, atol=1e-5)
    assert np.isfinite(p1).all()


def test_binary_targets_use_bce_with_the_log_odds_prior_when_asked():
    _, ex, count, up, score = _planted(seed=4)
    logit = 4.0 * score / score.std() - 1.0
    prob = 1.0 / (1.0 + np.exp(-logit))
    z = (np.random.default_rng(5).random(size=(M, N)) < prob).astype(np.float32)
    z[ROWS.nonzero()[0][:3], :7] = np.nan  # missing training entries are never drawn
    _, plain = _fit(z, ex, count, up, steps=100, eval_every=100, lr_head=3e-3)
    assert plain.loss == "bce" and float(plain.bias) == 0.0  # the final code's BCE: no prior
    method, state = _fit(z, ex, count, up, steps=1000, lr_head=3e-3, prior=True)
    assert state.loss == "bce"
    fit_z = z[np.asarray(state.fit_rows)]
    p = np.nanmean(fit_z)
    np.testing.assert_allclose(float(state.prior), p, rtol=1e-5)
    np.testing.assert_allclose(float(state.bias), np.log(p / (1 - p)), rtol=1e-5)
    pred = np.asarray(method.predict_rows(state, TEST))
    assert np.isfinite(pred).all()
    high, low = prob[TEST] > 0.8, prob[TEST] < 0.2
    assert (pred[high] > 0).mean() > 0.8
    assert (pred[low] > 0).mean() < 0.2
    assert _f1(pred, z[TEST]) > 0.7
    _, mse_state = _fit(z, ex, count, up, loss="mse", steps=100, eval_every=100, lr_head=3e-3)
    assert mse_state.loss == "mse" and float(mse_state.bias) == 0.0


def test_vmapped_seeds_average_the_single_seed_models():
    z, ex, count, up, _ = _planted(seed=6)
    m0, s0 = _fit(z, ex, count, up, seed=0, **FAST)
    m1, s1 = _fit(z, ex, count, up, seed=1, **FAST)
    m01, s01 = _fit(z, ex, count, up, seed=0, seeds=2, **FAST)
    p0, p1 = np.asarray(m0.predict_rows(s0, TEST)), np.asarray(m1.predict_rows(s1, TEST))
    p01 = np.asarray(m01.predict_rows(s01, TEST))
    assert np.abs(p0 - p1).max() > 1e-2  # the two seeds are different models
    np.testing.assert_allclose(p01, (p0 + p1) / 2, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(s01.step_S),
                                  np.concatenate([s0.step_S, s1.step_S]))
    np.testing.assert_allclose(np.asarray(s01.dev_f1_SxE),
                               np.concatenate([s0.dev_f1_SxE, s1.dev_f1_SxE]), atol=1e-3)


def test_the_kept_parameters_are_those_of_the_best_dev_step():
    z, ex, count, up, _ = _planted(noise=0.3, seed=3)
    method, state = _fit(z, ex, count, up, steps=800, lr_head=1e-2)
    steps = np.asarray(state.eval_steps_E)
    f1 = np.asarray(state.dev_f1_SxE)[0]
    np.testing.assert_array_equal(steps, np.arange(100, 801, 100))
    best = int(np.argmax(f1))
    assert best != len(f1) - 1  # the run fluctuates, so keeping the last step would differ
    assert int(state.step_S[0]) == steps[best]
    assert float(state.best_f1_S[0]) == f1[best]
    # Recomputed from the kept parameters, the dev F1 (mean over dev tasks) is the best one.
    dev = np.asarray(state.dev_rows)
    assert len(dev) == round(0.2 * ROWS.sum()) and not np.isin(dev, TEST).any()
    pred = np.asarray(method.predict_rows(state, dev))
    recomputed = np.mean([_f1(p, t) for p, t in zip(pred, z[dev])])
    assert recomputed == pytest.approx(f1[best], abs=1e-6)
    assert abs(recomputed - f1[-1]) > 1e-4


def test_upstream_blocks_give_the_same_fit_and_rows():
    z, ex, count, up, _ = _planted(seed=7)
    z[ROWS.nonzero()[0][:4], 250:] = np.nan  # the clamped last block overlaps missing columns
    m1, s1 = _fit(z, ex, count, up, **FAST)
    m2, s2 = _fit(z, ex, count, up, block_examples=64, **FAST)  # 5 blocks, the last one clamped
    np.testing.assert_allclose(np.asarray(s2.dev_f1_SxE), np.asarray(s1.dev_f1_SxE), atol=1e-6)
    np.testing.assert_allclose(np.asarray(m2.predict_rows(s2, TEST)),
                               np.asarray(m1.predict_rows(s1, TEST)), rtol=1e-5, atol=1e-6)
