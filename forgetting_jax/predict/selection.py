"""Which k upstream examples to score: informative column selection from the training rows.

A practitioner who can afford to score only k upstream examples of a fine-tuned model chooses
them here. Every rule reads the TRAINING rows only (never the values of the row to predict: that
would leak), and is deterministic given the training rows and the seed:

- `variance`: the k columns whose forgetting varies most across the training rows (the sample
  variance, ddof 1, of each column's finite entries; a column with fewer than two is ranked last);
- `leverage`: the k columns of highest leverage in the rank-r SVD of the column-centred training
  rows Zc = U S V^T (r = min(5, M_train - 1)): sum_r V[j, r]^2, the share of the top r
  directions that column j carries, the usual criterion for choosing the entries that pin a new
  row of a low-rank matrix down. The SVD goes through the M x M Gram Zc Zc^T, so a matrix with a
  million columns is two streamed passes (analysis/chunks.py ColumnChunks); a missing entry is
  the column's mean (0 after centring);
- `spread`: k columns drawn without replacement with probability proportional to leverage
  (Gumbel top-k, seeded): the high-leverage columns mostly, but not only the most redundant ones;
- `uniform`: k columns drawn uniformly (seeded), the reference point.

Ties (equal scores) are broken by a seeded random order. `valid_N` (False: a column the row to
predict cannot observe, NaN there) rules columns out; it is the observation mask of that row, not
its values, so the choice stays independent of what the row holds.

`forecast_columns` is the entry point of the `forecast` command (a fine-tuned checkpoint: choose
k columns of the matrix, score them); the protocol (predict/protocol.py) calls `column_scores`
once and `top_columns` per test task.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks

INFORMATIVE = ("variance", "leverage", "spread")  # the kinds that read the training rows
KINDS = ("uniform",) + INFORMATIVE
MAX_RANK = 5
Seed = int | Sequence[int]


@jax.jit
def _centre_chunk(z_MxC, rows_M, colw_C):
    """Column means, counts and sample variances over the usable rows, and the centred block with
    missing entries (and unusable rows, padding) at 0. Shapes [C], [C], [C], [M, C]."""
    ok = jnp.isfinite(z_MxC) & rows_M[:, None] & (colw_C[None, :] > 0)
    x = jnp.where(ok, z_MxC, 0.0)
    count = ok.sum(0).astype(jnp.float32)
    mean = x.sum(0) / jnp.maximum(count, 1.0)
    xc = jnp.where(ok, z_MxC - mean[None, :], 0.0)
    var = jnp.where(count >= 2, (xc * xc).sum(0) / jnp.maximum(count - 1.0, 1.0), -jnp.inf)
    return mean, count, var, xc


@jax.jit
def _gram_chunk(z_MxC, rows_M, colw_C):
    xc = _centre_chunk(z_MxC, rows_M, colw_C)[3]
    return xc @ xc.T


@jax.jit
def _leverage_chunk(z_MxC, rows_M, colw_C, proj_MxR):
    """sum_r (Zc[:, j] . u_r / s_r)^2 of each column j of the block: [C]."""
    xc = _centre_chunk(z_MxC, rows_M, colw_C)[3]
    v = xc.T @ proj_MxR
    return (v * v).sum(1)


def _as_chunks(z: np.ndarray | ColumnChunks) -> ColumnChunks:
    return z if isinstance(z, ColumnChunks) else ColumnChunks(np.asarray(z))


def column_variance(chunks: ColumnChunks) -> np.ndarray:
    """Sample variance of each column over the usable rows (chunks.rows_M), -inf where a column
    has fewer than two finite entries: float64 [N]."""
    out = [np.asarray(_centre_chunk(c.z_MxC, chunks.rows_M, c.colw_C)[2]) for c in chunks]
    return np.concatenate(out)[: chunks.shape[1]].astype(np.float64)


def column_leverage(chunks: ColumnChunks, max_rank: int = MAX_RANK) -> np.ndarray:
    """Leverage of each column in the rank-r SVD of the column-centred usable rows, r =
    min(max_rank, M_usable - 1): float64 [N], summing to r (less where the rank is lower).

    Pass 1 accumulates the Gram Zc Zc^T [M, M]; its top r eigenpairs (s_r^2, u_r) give V = Zc^T U
    S^-1; pass 2 sums V's squared rows. Directions with s_r^2 below 1e-9 of the largest are dropped."""
    m, n = chunks.shape
    usable = int(np.asarray(chunks.rows_M).sum())
    rank = int(min(max_rank, usable - 1))
    if rank < 1:
        return np.zeros(n, np.float64)
    gram = np.zeros((m, m), np.float64)
    for c in chunks:
        gram += np.asarray(_gram_chunk(c.z_MxC, chunks.rows_M, c.colw_C), np.float64)
    lam, u = np.linalg.eigh(gram)
    lam, u = lam[::-1][:rank], u[:, ::-1][:, :rank]
    keep = lam > max(lam[0], 0.0) * 1e-9 if lam.size and lam[0] > 0 else np.zeros(rank, bool)
    if not keep.any():
        return np.zeros(n, np.float64)
    proj = jnp.asarray(u[:, keep] / np.sqrt(lam[keep])[None, :], jnp.float32)
    out = [np.asarray(_leverage_chunk(c.z_MxC, chunks.rows_M, c.colw_C, proj)) for c in chunks]
    return np.concatenate(out)[:n].astype(np.float64)


def column_scores(z: np.ndarray | ColumnChunks, kind: str) -> np.ndarray:
    """The score of every column under `kind` (variance: the variance; leverage and spread: the
    leverage; uniform: zeros, every column alike), from the usable rows of `z` (a matrix whose
    every row is a training row, or ColumnChunks with its training-row mask): float64 [N]."""
    if kind not in KINDS:
        raise ValueError(f"selection must be one of {', '.join(KINDS)}, got {kind!r}")
    chunks = _as_chunks(z)
    if kind == "variance":
        return column_variance(chunks)
    if kind in ("leverage", "spread"):
        return column_leverage(chunks)
    return np.zeros(chunks.shape[1], np.float64)


def top_columns(scores_N: np.ndarray, k: int, seed: Seed = 0, valid_N: np.ndarray | None = None) -> np.ndarray:
    """The k valid columns of highest score, highest first; equal scores in a seeded random order;
    NaN scores count as -inf. int64 [k]. ValueError when fewer than k columns are valid."""
    scores = np.where(np.isnan(scores_N), -np.inf, np.asarray(scores_N, np.float64))
    cand = np.arange(scores.size) if valid_N is None else np.flatnonzero(np.asarray(valid_N, bool))
    if k < 1 or len(cand) < k:
        raise ValueError(f"cannot choose k={k} columns among {len(cand)} valid ones")
    sc = scores[cand]
    cut = sc[np.argpartition(-sc, k - 1)[k - 1]]  # the k-th highest score
    sure = cand[sc > cut]
    tied = cand[sc == cut]
    order = np.random.default_rng(seed).permutation(scores.size)  # a rank for every column
    tied = tied[np.argsort(order[tied], kind="stable")][: k - len(sure)]
    chosen = np.concatenate([sure, tied])
    rank = np.lexsort((order[chosen], -scores[chosen]))  # score first, then the seeded order
    return chosen[rank].astype(np.int64)


def gumbel_keys(weights_N: np.ndarray, seed: Seed) -> np.ndarray:
    """log(w) + Gumbel noise (seeded): the top k of these are a draw without replacement with
    probability proportional to w (0 weight: never before a positive one). float64 [N]."""
    w = np.maximum(np.asarray(weights_N, np.float64), 0.0)
    with np.errstate(divide="ignore"):
        return np.log(w) + np.random.default_rng(seed).gumbel(size=w.size)


def choose(scores_N: np.ndarray, k: int, kind: str, seed: Seed = 0,
           valid_N: np.ndarray | None = None) -> np.ndarray:
    """k columns from `column_scores(., kind)`: the top k (variance, leverage), a seeded draw
    weighted by leverage (spread) or uniform (uniform). int64 [k]."""
    if kind == "spread":
        return top_columns(gumbel_keys(scores_N, seed), k, seed, valid_N)
    if kind == "uniform":
        return top_columns(np.random.default_rng(seed).random(np.size(scores_N)), k, seed, valid_N)
    return top_columns(scores_N, k, seed, valid_N)


def informative_columns(z_train_MxN: np.ndarray | ColumnChunks, k: int, kind: str, seed: Seed = 0,
                        valid_N: np.ndarray | None = None) -> np.ndarray:
    """The k columns to score of a new row, chosen from the training rows `z_train_MxN` [M, N]
    (NaN = missing; or ColumnChunks over the matrix with its training-row mask) by `kind`
    (variance, leverage, spread; see the module docstring), never a column where valid_N [N] is
    False. Deterministic given the training rows and the seed. int64 [k], highest score first."""
    if kind not in INFORMATIVE:
        raise ValueError(f"informative selection must be one of {', '.join(INFORMATIVE)}, got {kind!r}")
    return choose(column_scores(z_train_MxN, kind), k, kind, seed, valid_N)


def select_columns(z_train_MxN: np.ndarray | ColumnChunks, k: int, select: str, seed: Seed = 0,
                   valid_N: np.ndarray | None = None) -> np.ndarray:
    """`informative_columns`, or with select="uniform" a seeded uniform draw of k valid columns.
    int64 [k]."""
    if select == "uniform":
        n = z_train_MxN.shape[1]
        return choose(np.zeros(n), k, "uniform", seed, valid_N)
    return informative_columns(z_train_MxN, k, select, seed, valid_N)


def forecast_columns(z_MxN: np.ndarray, k: int, select: str, seed: Seed = 0) -> np.ndarray:
    """The k upstream examples to score of a new fine-tuned checkpoint, chosen from every row of
    the matrix z_MxN [M, N] by `select` (uniform, variance, leverage or spread) among the columns
    with a finite entry in some row. int64 [k]. ValueError for an unknown rule or too few columns."""
    if select not in KINDS:
        raise ValueError(f"select must be one of {', '.join(KINDS)}, got {select!r}")
    chunks = ColumnChunks(np.asarray(z_MxN))
    valid = np.concatenate([np.asarray(jnp.isfinite(c.z_MxC).any(0) & (c.colw_C > 0)) for c in chunks])
    valid = valid[: chunks.shape[1]]
    scores = column_scores(chunks, select) if select != "uniform" else np.zeros(chunks.shape[1])
    return choose(scores, k, select, seed, valid)
