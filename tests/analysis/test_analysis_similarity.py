"""Forgetting against similarity (analysis/similarity.py): correlations against scipy on the
flattened and per-row arrays of a planted matrix, by hand on small ones; the item-only and
task-only R^2 by hand; the measures from the matrix file's arrays; the new fields' checks."""

import json

import numpy as np
import pytest
from scipy import stats as sps

from forgetting_jax.analysis import similarity
from forgetting_jax.analysis.matrix_file import MatrixFileError, read_matrix_file
from forgetting_jax.analysis.stats import json_safe

TASKS = [f"t{i}" for i in range(6)]


def _planted(seed=0):
    """Z a monotone, non-linear function of a cosine similarity plus noise; NaN and inf entries."""
    rng = np.random.default_rng(seed)
    sim = similarity.cosine(rng.normal(size=(6, 8)), rng.normal(size=(300, 8)))
    z = (np.exp(2 * sim) + 0.3 * rng.normal(size=sim.shape)).astype(np.float32)
    z[1, :5] = np.nan
    z[2, 7] = np.inf
    z[4, 100] = -np.inf
    return z, sim


def test_correlations_match_scipy_pooled_and_per_task():
    z, sim = _planted()
    result = similarity.correlations(z, sim, TASKS)
    ok = np.isfinite(z)
    assert result["count"] == int(ok.sum()) == 6 * 300 - 7
    assert result["pearson"] == pytest.approx(sps.pearsonr(z[ok], sim[ok]).statistic, abs=1e-6)
    assert result["spearman"] == pytest.approx(sps.spearmanr(z[ok], sim[ok]).statistic, abs=1e-9)
    assert result["spearman_columns"] is None
    assert 0.5 < result["pearson"] < result["spearman"]  # monotone, not linear
    for i, task in enumerate(TASKS):
        row = result["per_task"][task]
        keep = ok[i]
        assert row["count"] == int(keep.sum())
        assert row["pearson"] == pytest.approx(sps.pearsonr(z[i, keep], sim[i, keep]).statistic, abs=1e-6)
        assert row["spearman"] == pytest.approx(sps.spearmanr(z[i, keep], sim[i, keep]).statistic, abs=1e-9)
    assert result["per_task_mean"]["spearman"] == pytest.approx(
        np.mean([r["spearman"] for r in result["per_task"].values()]))
    json.dumps(result, allow_nan=False)  # JSON-safe as it is


def test_correlations_by_hand_and_undefined_ones():
    # row 0: z a monotone, non-linear function of sim (Spearman 1, Pearson < 1); row 1: z reverses
    # sim's order (-1 both); row 2: z constant (undefined: None, left out of the means)
    sim = np.array([[0.1, 0.2, 0.3, 0.4]] * 3, np.float32)
    z = np.array([[0.0, 0.1, 0.2, 10.0], [4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    result = similarity.correlations(z, sim, ["a", "b", "c"])
    rows = result["per_task"]
    assert rows["a"]["spearman"] == pytest.approx(1.0) and 0.5 < rows["a"]["pearson"] < 0.9
    assert rows["b"]["spearman"] == pytest.approx(-1.0) and rows["b"]["pearson"] == pytest.approx(-1.0)
    assert rows["c"] == {"pearson": None, "spearman": None, "count": 4}
    assert result["per_task_mean"]["spearman"] == pytest.approx(0.0, abs=1e-12)
    # NaN similarity (a zero vector's cosine) is left out like a NaN entry of Z
    sim[0, 3] = np.nan
    assert similarity.correlations(z, sim, ["a", "b", "c"])["per_task"]["a"] == {
        "pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0), "count": 3}


def test_pooled_spearman_of_many_entries_uses_a_seeded_column_subset():
    z, sim = _planted(1)
    result = similarity.correlations(z, sim, TASKS, max_pooled=600)
    k = result["spearman_columns"]
    assert k == int(300 * 600 / result["count"])
    keep = np.sort(np.random.default_rng(0).choice(300, k, replace=False))
    zs, ss = z[:, keep], sim[:, keep]
    ok = np.isfinite(zs)
    assert result["spearman"] == pytest.approx(sps.spearmanr(zs[ok], ss[ok]).statistic, abs=1e-9)
    full = similarity.correlations(z, sim, TASKS)
    assert result["pearson"] == full["pearson"] and abs(result["spearman"] - full["spearman"]) < 0.1


def test_item_only_and_task_only_r2_by_hand():
    # finite entries (0,0)=2 (0,1)=4 (1,0)=4 (2,1)=8 (2,2)=6 (NaN and inf left out): mean 4.8
    z = np.array([[2.0, 4.0, np.nan], [4.0, np.nan, np.inf], [np.nan, 8.0, 6.0]], np.float32)
    sst = sum((v - 4.8) ** 2 for v in (2, 4, 4, 8, 6))
    # column means 3, 6, 6: residuals -1, -2, 1, 2, 0
    item = 1 - (1 + 4 + 1 + 4 + 0) / sst
    # row means 3, 4, 7: residuals -1, 1, 0, 1, -1
    task = 1 - (1 + 1 + 0 + 1 + 1) / sst
    got = similarity.mean_baselines(z, block=2)  # two column blocks
    assert got["item_only"] == pytest.approx(item) and got["task_only"] == pytest.approx(task)
    assert got["item_only"] != pytest.approx(got["task_only"])
    # fit_utils' definitions on a complete matrix: predictions by column / row means, r2_score
    rng = np.random.default_rng(4)
    full = rng.normal(size=(5, 40)) + rng.normal(size=(1, 40)) * 2
    sst = ((full - full.mean()) ** 2).mean()
    want_item = 1 - ((full - full.mean(0, keepdims=True)) ** 2).mean() / sst
    want_task = 1 - ((full - full.mean(1, keepdims=True)) ** 2).mean() / sst
    got = similarity.mean_baselines(full.astype(np.float32))
    assert got["item_only"] == pytest.approx(want_item, abs=1e-5) and want_item > 0.6
    assert got["task_only"] == pytest.approx(want_task, abs=1e-5) and want_task < 0.2
    assert similarity.mean_baselines(np.ones((3, 4), np.float32)) == {"item_only": None, "task_only": None}


def test_measures_of_the_file_arrays():
    rng = np.random.default_rng(5)
    t, e = rng.normal(size=(3, 16)), rng.normal(size=(7, 16))
    t[1] = 0.0  # a zero vector: undefined cosines
    data = {"Z": np.zeros((3, 7), np.float32), "tasks": ["a", "b", "c"], "task_embeddings": t,
            "example_embeddings": e, "task_gradients": t, "example_gradients": e,
            "task_text_embeddings": e[:3], "example_text_embeddings": e}
    measures = similarity.available_measures(data)
    assert list(measures) == ["representation_cosine", "gradient_product", "gradient_cosine",
                              "text_embedding_cosine"]
    np.testing.assert_allclose(measures["gradient_product"](), t @ e.T, rtol=1e-5, atol=1e-6)
    cos = measures["gradient_cosine"]()
    assert np.isnan(cos[1]).all() and np.isfinite(np.delete(cos, 1, 0)).all()
    want = t[0] @ e[2] / np.linalg.norm(t[0]) / np.linalg.norm(e[2])
    assert cos[0, 2] == pytest.approx(want, abs=1e-6)
    np.testing.assert_allclose(np.diag(measures["text_embedding_cosine"]()), 1.0, atol=1e-6)
    assert similarity.available_measures({"Z": data["Z"], "tasks": data["tasks"]}) == {}


def test_similarity_analysis_content():
    z, sim = _planted(2)
    rng = np.random.default_rng(2)
    data = {"Z": z, "tasks": TASKS, "task_gradients": rng.normal(size=(6, 4)),
            "example_gradients": rng.normal(size=(300, 4))}
    r2 = {"item_only": 0.1, "task_only": 0.2, "additive": 0.3, "multiplicative": 0.25, "svd": {"1": 0.4}}
    result = similarity.similarity_analysis(data, r2, scatter_points=50)
    assert list(result.content["measures"]) == ["gradient_product", "gradient_cosine"]
    assert result.content["r2"] == r2 and result.content["paper"]["olmo-7b"]["openai"] == {
        "pearson": 0.158, "spearman": 0.233}
    assert result.samples["gradient_cosine"][0].shape == (50,)
    assert set(result.summary()["gradient_product"]) == {"pearson", "spearman", "count"}
    json.dumps(json_safe(result.content), allow_nan=False)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("change, message", [
    ({"task_gradients": np.zeros((3, 4))}, "field 'task_gradients' needs field 'example_gradients'"),
    ({"example_text_embeddings": np.zeros((5, 4))}, "field 'example_text_embeddings' needs field "
                                                    "'task_text_embeddings'"),
    ({"task_gradients": np.zeros((2, 4)), "example_gradients": np.zeros((5, 4))},
     r"field 'task_gradients' must be a numeric \[M=3, P\] array to match 'Z', got float64 \(2, 4\)"),
    ({"task_gradients": np.zeros((3, 4)), "example_gradients": np.zeros((6, 4))},
     r"field 'example_gradients' must be a numeric \[N=5, P\] array"),
    ({"task_text_embeddings": np.zeros((3, 4)), "example_text_embeddings": np.zeros((5, 3))},
     r"fields 'task_text_embeddings' \(3, 4\) and 'example_text_embeddings' \(5, 3\) must have the same width E"),
    ({"task_text_embeddings": np.zeros(3), "example_text_embeddings": np.zeros((5, 3))},
     r"field 'task_text_embeddings' must be a numeric \[M=3, E\]"),
    ({"task_text_embeddings": np.array([["a"]] * 3), "example_text_embeddings": np.zeros((5, 1))},
     r"field 'task_text_embeddings' must be a numeric"),
])
def test_matrix_file_checks_the_similarity_fields(tmp_path, change, message):
    base = dict(Z=np.zeros((3, 5), np.float32), tasks=np.array(["a", "b", "c"]))
    path = _write(tmp_path / "m.npz", **base, **change)
    with pytest.raises(MatrixFileError, match=message) as err:
        read_matrix_file(path)
    assert str(err.value).startswith(path)


def test_matrix_file_reads_the_similarity_fields(tmp_path):
    path = _write(tmp_path / "m.npz", Z=np.zeros((3, 5)), tasks=np.array(["a", "b", "c"]),
                  task_gradients=np.ones((3, 4), np.float16), example_gradients=np.ones((5, 4)),
                  task_text_embeddings=np.ones((3, 2)), example_text_embeddings=np.ones((5, 2)))
    data = read_matrix_file(path)
    assert data["task_gradients"].dtype == np.float32 and data["example_gradients"].shape == (5, 4)
    assert data["task_text_embeddings"].shape == (3, 2) and data["example_text_embeddings"].shape == (5, 2)
