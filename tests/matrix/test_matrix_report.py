"""The experiment report's numbers (render_report), read back from its tables and lines and
compared with the same quantities computed here from the matrix, non-finite entries included."""

import re

import numpy as np

from forgetting_jax.analysis.nonfinite import count_nonfinite
from forgetting_jax.matrix.report import render_report

_ANALYSIS = {"r2": {"additive": 0.5, "multiplicative": 0.6, "svd": {"1": 0.7, "2": 0.8}},
             "settings": {"top_fraction": 0.05}}
TASKS, IDS = ["a", "b", "c"], ["e0", "e1", "e2", "e3"]


def _matrix():
    z = np.array([[1.0, 1.0, 1.0, 1.0],
                  [np.inf, 3.0, 1.0, np.nan],
                  [-1.0, -np.inf, np.nan, np.nan]], np.float32)
    return z


def _render(z, analysis):
    return render_report("x", "m.npz", analysis, z, TASKS, IDS, [], "analysis")


def _table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header starts with `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?", line)]


def _finite_means(z, axis):
    finite = np.isfinite(z)
    return np.where(finite, z, 0).sum(axis) / np.maximum(finite.sum(axis), 1)


def test_numbers_are_over_the_finite_entries():
    z = _matrix()
    text = _render(z, dict(_ANALYSIS, nonfinite=count_nonfinite(z, TASKS).as_dict()))
    finite = z[np.isfinite(z)]
    [mean_line] = [line for line in text.splitlines() if line.startswith("- mean forgetting")]
    mean, percent = _numbers(mean_line)  # printed to 4 and 1 decimals
    assert abs(mean - finite.mean()) < 1e-4 and abs(percent - 100 * (finite > 0).mean()) < 0.05

    row_means = _finite_means(z, 1)
    [extremes] = [line for line in text.splitlines() if line.startswith("- the most forgetting-inducing")]
    np.testing.assert_allclose(_numbers(extremes), [row_means.max(), row_means.min()], atol=1e-4)

    tasks = _table(text, "task")
    order = np.argsort(-row_means, kind="stable")
    assert [r[0] for r in tasks] == [TASKS[i] for i in order]
    np.testing.assert_allclose([float(r[1]) for r in tasks], row_means[order], atol=1e-4)
    finite_z = np.where(np.isfinite(z), z, 0)
    forgotten = 100 * ((finite_z > 0) & np.isfinite(z)).sum(1) / np.isfinite(z).sum(1)
    np.testing.assert_allclose([float(r[2].rstrip("%")) for r in tasks], forgotten[order], atol=0.5)

    examples = _table(text, "example")
    column_means = _finite_means(z, 0)
    got = {r[0]: float(r[-1]) for r in examples}  # example, source, text, mean Z
    np.testing.assert_allclose([got[i] for i in IDS], column_means, atol=1e-4)
    assert [r[0] for r in examples] == [IDS[j] for j in np.argsort(-column_means, kind="stable")]

    r2 = {r[0]: float(r[1]) for r in _table(text, "model")}
    assert r2 == {"additive (mu + b_task + b_example)": 0.5, "multiplicative rank 1 (alpha_i beta_j)": 0.6,
                  "rank-1 SVD": 0.7, "rank-2 SVD": 0.8}


def test_the_nonfinite_entries_are_counted():
    z = _matrix()
    for analysis in (dict(_ANALYSIS, nonfinite=count_nonfinite(z, TASKS).as_dict()), dict(_ANALYSIS)):
        [line] = [line for line in _render(z, analysis).splitlines() if "non-finite entries" in line]
        # 5 of 12 non-finite (1 +inf, 1 -inf, 3 NaN) in 2 tasks (c: 3, b: 2), 7 finite
        assert _numbers(line.replace("+inf", "").replace("-inf", "")) == [5, 12, 1, 1, 3, 2, 3, 2, 7]


def test_no_line_when_all_entries_are_finite():
    z = np.nan_to_num(_matrix(), nan=0.5, posinf=0.5, neginf=0.5)
    text = _render(z, dict(_ANALYSIS, nonfinite=count_nonfinite(z, TASKS).as_dict()))
    assert "non-finite" not in text and "finite entries" not in text
    [mean_line] = [line for line in text.splitlines() if line.startswith("- mean forgetting")]
    assert abs(_numbers(mean_line)[0] - z.mean()) < 1e-3
