"""Counting the non-finite entries of a forgetting matrix (planted NaN, +inf and -inf)."""

import json

import numpy as np
import pytest

from forgetting_jax.analysis.nonfinite import NonFinite, count_nonfinite


def _planted():
    """Z [6, 50] with 4 NaN and 1 +inf in row 1, 2 -inf in row 3, 1 +inf and 1 NaN in row 5."""
    z = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32)
    z[1, [0, 7, 8, 49]] = np.nan
    z[1, 3] = np.inf
    z[3, [10, 11]] = -np.inf
    z[5, 20] = np.inf
    z[5, 21] = np.nan
    return z, [f"task_{i}" for i in range(6)]


@pytest.mark.parametrize("chunk_rows", [None, 1, 2, 4, 6, 100])
def test_counts_by_kind_and_row(chunk_rows):
    z, tasks = _planted()
    nf = count_nonfinite(z, tasks, chunk_rows=chunk_rows)
    assert (nf.nan, nf.posinf, nf.neginf, nf.total) == (5, 2, 2, 300)
    assert nf.count == 9 and nf.any
    assert nf.rows_affected == {"task_1": 5, "task_3": 2, "task_5": 2}
    assert list(nf.rows_affected) == ["task_1", "task_3", "task_5"]  # row order


def test_row_index_names_without_tasks_and_other_dtypes():
    z, _ = _planted()
    assert count_nonfinite(z).rows_affected == {"1": 5, "3": 2, "5": 2}
    assert count_nonfinite(z.astype(np.float64), chunk_rows=4).count == 9
    ints = count_nonfinite(np.arange(12).reshape(3, 4))
    assert (ints.count, ints.total, ints.any) == (0, 12, False)


def test_memmapped_matrix_streams(tmp_path):
    z, tasks = _planted()
    path = tmp_path / "z.npy"
    np.save(path, z)
    nf = count_nonfinite(np.load(path, mmap_mode="r"), tasks, chunk_rows=2)
    assert nf == count_nonfinite(z, tasks)


def test_none():
    nf = count_nonfinite(np.zeros((3, 4000), np.float32), ["a", "b", "c"])
    assert nf == NonFinite(nan=0, posinf=0, neginf=0, total=12000, rows_affected={})
    assert not nf.any and nf.count == 0
    text = nf.describe()
    assert text == "Z has no non-finite entries (12,000 entries)"


def test_describe_sentence():
    z, tasks = _planted()
    text = count_nonfinite(z, tasks).describe("Z")
    assert text == ("Z has 9 non-finite entries of 300 (2 +inf, 2 -inf, 5 NaN) in 3 tasks "
                    "(task_1: 5, task_3: 2, task_5: 2); they are left out of every fit and metric")
    one = np.zeros((2, 2))
    one[0, 0] = np.inf
    assert count_nonfinite(one, ["x", "y"]).describe("the matrix").startswith(
        "the matrix has 1 non-finite entry of 4 (1 +inf, 0 -inf, 0 NaN) in 1 task (x: 1);")


def test_describe_lists_the_largest_rows_first_and_caps_the_list():
    z = np.zeros((15, 20), np.float32)
    for i in range(15):
        z[i, :i + 1] = np.nan  # row i has i + 1
    text = count_nonfinite(z, [f"t{i}" for i in range(15)]).describe()
    assert "in 15 tasks (t14: 15, t13: 14, " in text
    assert "t5: 6, and 5 more)" in text and "t4:" not in text


def test_as_dict_round_trip_through_json():
    z, tasks = _planted()
    nf = count_nonfinite(z, tasks)
    d = json.loads(json.dumps(nf.as_dict()))
    assert d == {"count": 9, "nan": 5, "posinf": 2, "neginf": 2, "total": 300,
                 "rows_affected": {"task_1": 5, "task_3": 2, "task_5": 2}}
    assert NonFinite.from_dict(d) == nf


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        count_nonfinite(np.zeros(4))
    with pytest.raises(ValueError, match="2 task names for 3 rows"):
        count_nonfinite(np.zeros((3, 2)), ["a", "b"])


def test_heatmap_colour_scale_ignores_infinities():
    from forgetting_jax.analysis import figures

    z = np.random.default_rng(0).normal(size=(5, 40)).astype(np.float32)
    z[:, :4] = np.inf  # 10% of the entries: the 99th percentile of |Z| would be inf
    z[1, 5:7] = -np.inf
    z[0, 9] = np.nan
    fig = figures.heatmap(z, list("abcde"))
    lo, hi = fig.axes[0].images[0].get_clim()
    finite = np.abs(z[np.isfinite(z)])
    assert np.isfinite(hi) and lo == -hi and hi == pytest.approx(np.percentile(finite, 99))
    figures.plt.close(fig)
