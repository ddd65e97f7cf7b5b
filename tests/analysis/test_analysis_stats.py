"""Ranks, correlations, enrichment and the matrix-file checks."""

import numpy as np
import pytest
from scipy import stats as sps

from forgetting_jax.analysis import stats
from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file


def test_average_ranks_match_scipy_with_ties():
    x = np.random.default_rng(0).integers(0, 20, 200).astype(np.float32)
    np.testing.assert_allclose(stats.average_ranks(x), sps.rankdata(x), atol=1e-5)


def test_masked_spearman_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300).astype(np.float32)
    b = (a + rng.normal(size=300)).astype(np.float32)
    mask = rng.random(300) < 0.7
    want = sps.spearmanr(a[mask], b[mask]).statistic
    assert abs(float(stats.masked_spearman(a, b, mask)) - want) < 1e-5
    assert np.isnan(float(stats.masked_spearman(np.ones(300, np.float32), b, mask)))


def test_cosine_and_similarity_correlation():
    rng = np.random.default_rng(2)
    t, e = rng.normal(size=(5, 8)), rng.normal(size=(50, 8))
    sim = np.asarray(stats.cosine_similarity(t, e))
    want = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (
        e / np.linalg.norm(e, axis=1, keepdims=True)).T
    np.testing.assert_allclose(sim, want, atol=1e-5)
    z = 2 * sim + 0.01 * rng.normal(size=sim.shape)
    z[0, :3] = np.nan
    corr = stats.similarity_correlation(z, sim)
    assert corr["pearson_mean"] > 0.99 and corr["spearman_mean"] > 0.99


def test_source_enrichment_detects_planted_source():
    rng = np.random.default_rng(3)
    sources = np.array(["web", "code", "books"])[rng.integers(0, 3, 3000)]
    score = rng.normal(size=3000) + 2.0 * (sources == "code")
    res = stats.source_enrichment(score, sources, top_fraction=0.05)
    assert res["sources"][0]["source"] == "code" and res["sources"][0]["p_value"] < 1e-10
    assert res["p_value"] < 1e-10
    null = stats.source_enrichment(rng.normal(size=3000), sources, top_fraction=0.05)
    assert null["p_value"] > 1e-3


def test_component_summary_orders_by_loading():
    u = np.array([[0.1], [0.9], [0.5]])
    v = np.array([[0.2], [0.7], [-0.1], [0.4]])
    out = stats.component_summary(u, np.array([3.0]), v, ["a", "b", "c"], list("wxyz"), 2)
    assert [t["task"] for t in out[0]["top_tasks"]] == ["b", "c"]
    assert [e["example"] for e in out[0]["top_examples"]] == ["x", "z"]


def test_json_safe():
    assert stats.json_safe({"a": np.float32(np.nan), "b": [np.int64(2), float("inf")]}) == {
        "a": None, "b": [2, None]}


def test_matrix_file_errors(tmp_path):
    with pytest.raises(MatrixFileError, match="no such file"):
        read_matrix_file(str(tmp_path / "none.npz"))
    p = tmp_path / "m.npz"
    np.savez(p, tasks=np.array(["a", "b"]))
    with pytest.raises(MatrixFileError, match="missing field 'Z'"):
        read_matrix_file(str(p))
    np.savez(p, Z=np.zeros((2, 3)), tasks=np.array(["a", "b", "c"]))
    with pytest.raises(MatrixFileError, match="'tasks' must be \\[2\\]"):
        read_matrix_file(str(p))
    np.savez(p, Z=np.zeros((2, 3)), tasks=np.array(["a", "b"]), example_sources=np.array(["x"]))
    with pytest.raises(MatrixFileError, match="example_sources"):
        read_matrix_file(str(p))
    np.savez(p, Z=np.zeros((2, 3), np.float64), tasks=np.array(["a", "b"]))
    data = read_matrix_file(str(p))
    assert data["Z"].dtype == np.float32 and data["example_ids"] == ["0", "1", "2"]
