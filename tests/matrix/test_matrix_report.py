"""The experiment report's text (render_report) on a matrix with non-finite entries."""

import numpy as np

from forgetting_jax.analysis.nonfinite import count_nonfinite
from forgetting_jax.matrix.report import render_report

_ANALYSIS = {"r2": {"additive": 0.5, "multiplicative": 0.6, "svd": {"1": 0.7, "2": 0.8}},
             "settings": {"top_fraction": 0.05}}


def _matrix():
    """Z [3, 4]: row means over the finite entries 1.0, 2.0, -1.0; 7 of 9 finite entries > 0."""
    z = np.array([[1.0, 1.0, 1.0, 1.0],
                  [np.inf, 3.0, 1.0, np.nan],
                  [-1.0, -np.inf, np.nan, np.nan]], np.float32)
    return z, ["a", "b", "c"], ["e0", "e1", "e2", "e3"]


def _render(z, tasks, ids, analysis):
    return render_report("x", "m.npz", analysis, z, tasks, ids, [], "analysis")


def test_summary_over_finite_entries_names_the_nonfinite_ones():
    z, tasks, ids = _matrix()
    analysis = dict(_ANALYSIS, nonfinite=count_nonfinite(z, tasks).as_dict())
    text = _render(z, tasks, ids, analysis)
    # finite entries: 1 1 1 1 3 1 -1: mean 7/7 = 1, 6 of 7 positive
    assert "- mean forgetting +1.0000 nats per token; 85.7% of entries are positive" in text
    assert "raises NLL by +2.0000 on average, the least by -1.0000" in text
    assert ("- the matrix has 5 non-finite entries of 12 (1 +inf, 1 -inf, 3 NaN) in 2 tasks "
            "(c: 3, b: 2); they are left out of every fit and metric; the means and percentages "
            "in this report are over the 7 finite entries") in text
    assert "| b | +2.0000 | 100% |" in text and "| c | -1.0000 | 0% |" in text
    numbers = [line for line in text.splitlines() if line.startswith(("|", "- mean", "- the most"))]
    assert not any("inf" in line or "nan" in line.lower() for line in numbers), numbers
    # column means over finite entries: e1 = (1 + 3) / 2 = 2, e0 = (1 - 1) / 2 = 0
    assert "| e1 |  | +2.0000 |" in text and "| e0 |  | +0.0000 |" in text


def test_counts_from_the_matrix_when_the_analysis_has_none():
    z, tasks, ids = _matrix()
    assert "5 non-finite entries of 12" in _render(z, tasks, ids, dict(_ANALYSIS))


def test_no_line_when_all_entries_are_finite():
    z, tasks, ids = _matrix()
    z = np.nan_to_num(z, nan=0.5, posinf=0.5, neginf=0.5)
    analysis = dict(_ANALYSIS, nonfinite=count_nonfinite(z, tasks).as_dict())
    text = _render(z, tasks, ids, analysis)
    assert "non-finite" not in text and "finite entries" not in text
