"""Statistics of the replay experiment across test tasks: means with confidence intervals and
paired tests (each task is one pair: the same task fine-tuned with two strategies)."""

import math

import numpy as np
from scipy import stats


def mean_ci(x_T: np.ndarray, confidence: float = 0.95) -> dict:
    """Mean of the finite values and its Student-t confidence interval (None bounds below 2 values)."""
    x = np.asarray(x_T, np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "ci_low": None, "ci_high": None}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def paired_tests(a_T: np.ndarray, b_T: np.ndarray, confidence: float = 0.95) -> dict:
    """Paired comparison of a and b over the tasks where both are finite: the mean difference a - b
    with its confidence interval, the paired t-test and the Wilcoxon signed-rank test (two-sided);
    a p-value is None where the test is undefined (fewer than 2 pairs, all differences 0)."""
    a, b = np.asarray(a_T, np.float64), np.asarray(b_T, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    d = a[both] - b[both]
    difference = {f"difference_{k}": v for k, v in mean_ci(d, confidence).items() if k != "n"}
    out = {"n": int(d.size), "a_lower": int((d < 0).sum()), **difference}
    out["t"] = out["t_p"] = out["wilcoxon"] = out["wilcoxon_p"] = None
    if d.size >= 2 and np.any(d != 0):
        if d.std(ddof=1) > 0:
            t = stats.ttest_rel(a[both], b[both])
            out["t"], out["t_p"] = float(t.statistic), float(t.pvalue)
        w = stats.wilcoxon(d)
        out["wilcoxon"], out["wilcoxon_p"] = float(w.statistic), float(w.pvalue)
    return out
