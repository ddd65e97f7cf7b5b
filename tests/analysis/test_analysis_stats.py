"""Ranks, correlations, enrichment and the matrix-file checks.

Statistics are checked against values computed another way: by hand from the definition on small
inputs with known answers, or against scipy where the implementation does not itself call scipy
(ranks and correlations are jnp).
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from forgetting_jax.analysis import stats
from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file


def test_average_ranks_by_hand_with_ties():
    # sorted: 1 (rank 1), 2 2 (ranks 2, 3 -> 2.5), 5 5 5 (ranks 4, 5, 6 -> 5), 7 (rank 7)
    x = np.array([5, 2, 7, 5, 1, 2, 5], np.float32)
    np.testing.assert_array_equal(np.asarray(stats.average_ranks(x)),
                                  [5, 2.5, 7, 5, 1, 2.5, 5])
    np.testing.assert_array_equal(np.asarray(stats.average_ranks(np.full(4, 3.0, np.float32))),
                                  [2.5] * 4)
    np.testing.assert_array_equal(np.asarray(stats.average_ranks(np.array([0.3, -1.0, 2.0]))),
                                  [2, 1, 3])


def test_average_ranks_match_scipy_with_ties():
    # average_ranks is jnp, not a scipy call: scipy is an independent reference here
    x = np.random.default_rng(0).integers(0, 20, 200).astype(np.float32)
    np.testing.assert_allclose(stats.average_ranks(x), sps.rankdata(x), atol=1e-5)


def test_masked_ranks_put_masked_entries_past_the_end():
    x = np.array([3.0, 100.0, 1.0, -50.0, 2.0], np.float32)
    mask = np.array([True, False, True, False, True])
    np.testing.assert_array_equal(np.asarray(stats.masked_ranks(x, mask))[mask], [3, 1, 2])


def test_masked_pearson_by_hand():
    # a - mean = (-1, 0, 1), b - mean = (-1, 1, 0): sum of products 1, norms sqrt(2) each
    a = np.array([1.0, 2.0, 3.0, 40.0], np.float32)
    b = np.array([1.0, 3.0, 2.0, -9.0], np.float32)
    mask = np.array([True, True, True, False])
    assert float(stats.masked_pearson(a, b, mask)) == pytest.approx(0.5, abs=1e-6)
    assert float(stats.masked_pearson(a, 2 * a + 1, np.ones(4, bool))) == pytest.approx(1, abs=1e-6)
    assert np.isnan(float(stats.masked_pearson(np.ones(4, np.float32), b, mask)))


def test_masked_spearman_of_known_permutations():
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)); entries outside the mask hold values that would
    # change every rank if they were used
    a = np.array([1, 2, 3, 4, 5, -7, 99], np.float32)
    mask = np.array([True] * 5 + [False] * 2)
    for b, want in (([5, 4, 3, 2, 1], -1.0),                  # reversed
                    ([2, 1, 4, 3, 5], 1 - 6 * 4 / 120),       # d = 1 1 1 1 0: 0.8
                    ([3, 1, 5, 2, 4], 1 - 6 * 14 / 120),      # d = 2 1 2 2 1: 0.3
                    ([10, 20, 30, 40, 50], 1.0)):             # monotone, not linear in a
        b = np.array(list(b) + [1000, -1000], np.float32)
        assert float(stats.masked_spearman(a, b, mask)) == pytest.approx(want, abs=1e-6), b


def test_masked_spearman_with_ties_by_hand():
    # b = (1, 1, 2, 3): average ranks (1.5, 1.5, 3, 4); a's ranks (1, 2, 3, 4).
    # Pearson of the ranks: centred (-1.5, -0.5, 0.5, 1.5) and (-1, -1, 0.5, 1.5):
    # sum of products 1.5 + 0.5 + 0.25 + 2.25 = 4.5, norms sqrt(5) and sqrt(4.5)
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([1, 1, 2, 3], np.float32)
    want = 4.5 / math.sqrt(5 * 4.5)
    assert float(stats.masked_spearman(a, b, np.ones(4, bool))) == pytest.approx(want, abs=1e-6)


def test_masked_spearman_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300).astype(np.float32)
    b = (a + rng.normal(size=300)).astype(np.float32)
    mask = rng.random(300) < 0.7
    want = sps.spearmanr(a[mask], b[mask]).statistic
    assert abs(float(stats.masked_spearman(a, b, mask)) - want) < 1e-5
    assert np.isnan(float(stats.masked_spearman(np.ones(300, np.float32), b, mask)))


def test_cosine_of_known_vectors():
    t = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -3.0]], np.float32)
    e = np.array([[0.0, 2.0], [3.0, 0.0], [-1.0, -1.0], [5.0, 5.0]], np.float32)
    r = 1 / math.sqrt(2)
    want = [[0, 1, -r, r],   # (1, 0) against up, right, down-left, up-right
            [r, r, -1, 1],   # (1, 1)
            [-1, 0, r, -r]]  # (0, -3)
    np.testing.assert_allclose(np.asarray(stats.cosine_similarity(t, e)), want, atol=1e-6)


def test_source_enrichment_detects_planted_source():
    rng = np.random.default_rng(3)
    sources = np.array(["web", "code", "books"])[rng.integers(0, 3, 3000)]
    score = rng.normal(size=3000) + 2.0 * (sources == "code")
    res = stats.source_enrichment(score, sources, top_fraction=0.05)
    assert res["sources"][0]["source"] == "code" and res["sources"][0]["p_value"] < 1e-10
    assert res["p_value"] < 1e-10
    null = stats.source_enrichment(rng.normal(size=3000), sources, top_fraction=0.05)
    assert null["p_value"] > 1e-3


def _planted_top(counts: dict[str, tuple[int, int]]):
    """Scores and sources where source s has counts[s] = (in the top, below the top) examples,
    the top being the highest scores."""
    sources, score, hi, lo = [], [], 100.0, 0.0
    for name, (top, rest) in counts.items():
        for _ in range(top):
            sources.append(name), score.append(hi)
            hi += 1
        for _ in range(rest):
            sources.append(name), score.append(lo)
            lo += 1
    return np.array(score), np.array(sources)


def test_source_enrichment_2x2_by_hand():
    # 20 examples, 10 per source, top 10: a has 8 of them, b 2. Table [[8, 2], [2, 8]], every
    # expected count 5. A 2x2 table gets Yates' continuity correction:
    # chi2 = sum (|O - E| - 1/2)^2 / E = 4 * 2.5^2 / 5 = 5; with 1 degree of freedom
    # P(chi2 > x) = erfc(sqrt(x / 2)).
    score, sources = _planted_top({"a": (8, 2), "b": (2, 8)})
    res = stats.source_enrichment(score, sources, top_fraction=0.5)
    assert res["top_examples"] == 10 and res["dof"] == 1
    assert res["chi2"] == pytest.approx(5.0, rel=1e-9)
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(2.5)), rel=1e-9)
    a = res["sources"][0]
    assert (a["source"], a["examples"], a["in_top"], a["expected"], a["ratio"]) == (
        "a", 10, 8, 5.0, 1.6)
    # one-sided hypergeometric: P(X >= 8), X the a's among 10 drawn from 10 a's and 10 b's
    want = sum(math.comb(10, k) * math.comb(10, 10 - k) for k in (8, 9, 10)) / math.comb(20, 10)
    assert a["p_value"] == pytest.approx(want, rel=1e-9)  # 2126 / 184756
    b = res["sources"][1]
    want_b = sum(math.comb(10, k) * math.comb(10, 10 - k) for k in range(2, 11)) / math.comb(20, 10)
    assert b["source"] == "b" and b["p_value"] == pytest.approx(want_b, rel=1e-9)


def test_source_enrichment_3_sources_by_hand():
    # 30 examples, 10 per source, top 10 holding 6, 3, 1: expected 10/3 in the top and 20/3
    # below for each. chi2 = sum (O - E)^2 / E (no correction past 2x2)
    # = (64/9 + 1/9 + 49/9) / (10/3) + (64/9 + 1/9 + 49/9) / (20/3) = 3.8 + 1.9 = 5.7;
    # with 2 degrees of freedom P(chi2 > x) = exp(-x / 2).
    score, sources = _planted_top({"a": (6, 4), "b": (3, 7), "c": (1, 9)})
    res = stats.source_enrichment(score, sources, top_fraction=1 / 3)
    assert res["top_examples"] == 10 and res["dof"] == 2
    assert res["chi2"] == pytest.approx(5.7, rel=1e-9)
    assert res["p_value"] == pytest.approx(math.exp(-5.7 / 2), rel=1e-9)
    assert [r["source"] for r in res["sources"]] == ["a", "b", "c"]  # by p-value


def test_source_enrichment_leaves_out_nonfinite_scores():
    score, sources = _planted_top({"a": (8, 2), "b": (2, 8)})
    score = np.concatenate([score, [np.nan, np.inf, -np.inf]])
    sources = np.concatenate([sources, ["b", "b", "b"]])
    res = stats.source_enrichment(score, sources, top_fraction=0.5)
    assert res["chi2"] == pytest.approx(5.0, rel=1e-9)
    assert sum(r["examples"] for r in res["sources"]) == 20


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
