"""Statistics of a forgetting matrix: ranks, top components, source enrichment, cosines (the
correlations of Z with similarity measures: analysis/similarity.py).

Rank helpers are jnp (used inside the jit-compiled evaluation too); the tests of enrichment use
scipy on small host arrays.
"""

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as sps


def average_ranks(x_N: jax.Array) -> jax.Array:
    """1-based ranks of `x_N` with ties sharing their mean rank (scipy's 'average')."""
    n = x_N.shape[0]
    perm = jnp.argsort(x_N)
    s = x_N[perm]
    idx = jnp.arange(n)
    first = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
    last = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(first, idx, 0))
    stop = jax.lax.cummin(jnp.where(last, idx, n - 1), reverse=True)
    ranks_sorted = (start + stop).astype(jnp.float32) / 2.0 + 1.0
    return jnp.zeros((n,), jnp.float32).at[perm].set(ranks_sorted)


def masked_ranks(x_N: jax.Array, mask_N: jax.Array) -> jax.Array:
    """Average ranks among the entries where `mask_N` holds (others get ranks past the end)."""
    return average_ranks(jnp.where(mask_N, x_N, jnp.inf))


def masked_pearson(a_N: jax.Array, b_N: jax.Array, mask_N: jax.Array) -> jax.Array:
    """Pearson correlation over masked entries; NaN when either side is constant."""
    w = mask_N.astype(jnp.float32)
    n = w.sum()
    am = (a_N * w).sum() / n
    bm = (b_N * w).sum() / n
    da = jnp.where(mask_N, a_N - am, 0.0)
    db = jnp.where(mask_N, b_N - bm, 0.0)
    den = jnp.sqrt((da * da).sum() * (db * db).sum())
    return jnp.where(den > 0, (da * db).sum() / jnp.where(den > 0, den, 1.0), jnp.nan)


def masked_spearman(a_N: jax.Array, b_N: jax.Array, mask_N: jax.Array) -> jax.Array:
    """Spearman correlation over masked entries (Pearson of average ranks)."""
    return masked_pearson(masked_ranks(a_N, mask_N), masked_ranks(b_N, mask_N), mask_N)


def cosine_similarity(task_MxD: jax.Array, example_NxD: jax.Array) -> jax.Array:
    """Cosine between each task's and each example's representation: [M, N]."""
    t = task_MxD / jnp.maximum(jnp.linalg.norm(task_MxD, axis=1, keepdims=True), 1e-12)
    e = example_NxD / jnp.maximum(jnp.linalg.norm(example_NxD, axis=1, keepdims=True), 1e-12)
    return t @ e.T


def top_indices(values_N: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` largest finite values, largest first."""
    values = np.where(np.isfinite(values_N), values_N, -np.inf)
    n = min(n, values.shape[0])
    idx = np.argpartition(-values, n - 1)[:n]
    return idx[np.argsort(-values[idx], kind="stable")]


def component_summary(u_MxK: np.ndarray, s_K: np.ndarray, v_NxK: np.ndarray,
                      tasks: Sequence[str], example_ids: Sequence[str], top_n: int = 10
                      ) -> list[dict[str, Any]]:
    """Per component: the tasks and upstream examples with the largest loadings.

    Components are oriented so that example loadings sum to a positive number; a task with a
    large positive loading forgets the component's top examples most.
    """
    out = []
    for c in range(u_MxK.shape[1]):
        ti = top_indices(u_MxK[:, c], top_n)
        ei = top_indices(v_NxK[:, c], top_n)
        out.append({
            "component": c + 1,
            "singular_value": float(s_K[c]),
            "top_tasks": [{"task": str(tasks[i]), "loading": float(u_MxK[i, c])} for i in ti],
            "top_examples": [{"example": str(example_ids[j]), "index": int(j),
                              "loading": float(v_NxK[j, c])} for j in ei],
        })
    return out


def source_enrichment(score_N: np.ndarray, sources_N: Sequence[str],
                      top_fraction: float = 0.05) -> dict[str, Any]:
    """Over-representation of upstream sources among the top-scored (most forgotten) examples.

    Per source: count among the top, expected count, ratio and a one-sided hypergeometric
    p-value; overall: the chi-square test of independence of source and membership of the top.
    """
    score = np.asarray(score_N, np.float64)
    sources = np.asarray([str(s) for s in sources_N])
    keep = np.isfinite(score)
    score, sources = score[keep], sources[keep]
    n = score.shape[0]
    n_top = max(1, int(round(top_fraction * n)))
    top = np.zeros(n, bool)
    top[top_indices(score, n_top)] = True
    names, counts = np.unique(sources, return_counts=True)
    per_source, table = [], []
    for name, count in zip(names, counts):
        in_top = int((top & (sources == name)).sum())
        expected = n_top * count / n
        p = float(sps.hypergeom.sf(in_top - 1, n, count, n_top))
        per_source.append({"source": str(name), "examples": int(count), "in_top": in_top,
                           "expected": float(expected),
                           "ratio": float(in_top / expected) if expected else None,
                           "p_value": p})
        table.append([in_top, int(count) - in_top])
    per_source.sort(key=lambda r: r["p_value"])
    result: dict[str, Any] = {"top_fraction": top_fraction, "top_examples": n_top,
                              "sources": per_source}
    if len(names) > 1:
        chi2, p, dof, _ = sps.chi2_contingency(np.asarray(table))
        result.update(chi2=float(chi2), dof=int(dof), p_value=float(p))
    else:
        result.update(chi2=None, dof=0, p_value=None)
    return result


def json_safe(obj: Any) -> Any:
    """A copy of `obj` that JSON can hold: NaN/inf become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class FiniteMeans(NamedTuple):
    """Row and column statistics of a matrix over its finite entries (NaN and +-inf left out)."""

    row_mean_M: np.ndarray  # NaN for a row without a finite entry
    col_mean_N: np.ndarray
    row_count_M: np.ndarray  # finite entries per row
    row_positive_M: np.ndarray  # finite entries above 0 per row


def finite_means(z_MxN: np.ndarray, block: int = 1 << 14) -> FiniteMeans:
    """`FiniteMeans` of z_MxN [M, N], a column block at a time (no full-size temporaries; one +inf
    does not make a mean inf, as np.nanmean would)."""
    m, n = z_MxN.shape
    row_sum, row_count, row_pos = np.zeros(m), np.zeros(m), np.zeros(m)
    col_mean = np.full(n, np.nan)
    for s in range(0, n, block):
        b = np.asarray(z_MxN[:, s:s + block], np.float64)
        ok = np.isfinite(b)
        vals = np.where(ok, b, 0.0)
        row_sum += vals.sum(1)
        row_count += ok.sum(1)
        row_pos += (vals > 0).sum(1)
        count = ok.sum(0)
        col_mean[s:s + block] = np.where(count > 0, vals.sum(0) / np.maximum(count, 1), np.nan)
    row_mean = np.where(row_count > 0, row_sum / np.maximum(row_count, 1), np.nan)
    return FiniteMeans(row_mean, col_mean, row_count, row_pos)
