"""NaN-aware fits of a forgetting matrix: additive, multiplicative rank-1, biased low rank, SVD.

All models share one form, fitted by ridge alternating least squares over the observed entries
of the usable rows (NaN = missing):

    z_ij ~ mu + b_i + c_j + p_i . q_j        (with biases)
    z_ij ~ p_i . q_j                         (without)

additive = rank 0 with biases; multiplicative = rank 1 without biases; truncated SVD = rank k
without biases (solved exactly by an eigendecomposition of the Gram matrix when nothing is
missing). Each row's parameters are `[b_i, p_i]` (or `[p_i]`) and each column's `[c_j, q_j]`,
so one set of helpers serves both sides. A sweep is one pass over column chunks: the chunk's
column parameters are solved locally, then the row statistics accumulate for the row solve.

R^2 = 1 - MSE / Var over the observed entries, as in the paper.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks


class Moments(NamedTuple):
    """Statistics of the usable entries, from one pass."""

    mean: float
    var: float
    count: int
    sum_sq: float  # sum of z^2 over usable entries
    col_mean_N: jax.Array  # NaN-aware column means (global mean where a column has no entry)
    col_count_N: jax.Array
    dense: tuple[bool, ...]  # per chunk: every usable entry observed


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["mu", "rows_MxD", "cols_NxD", "sse_M", "count_M"],
    meta_fields=["biases", "iterations"],
)
@dataclasses.dataclass(frozen=True)
class FactorFit:
    """A fitted model: z_ij ~ mu + offset(row_i) + design(row_i) . col_j (= mu + b + c + p.q)."""

    mu: jax.Array  # [] global offset (0 without biases)
    rows_MxD: jax.Array  # [b_i, p_i] or [p_i]; zeros for unusable rows
    cols_NxD: jax.Array  # [c_j, q_j] or [q_j]
    sse_M: jax.Array  # residual sum of squares per row over its usable entries
    count_M: jax.Array  # usable observed entries per row
    biases: bool
    iterations: int


def design(params_XxD: jax.Array, biases: bool) -> jax.Array:
    """Regressors that one side offers the other: [1, p] with biases, p without."""
    if not biases:
        return params_XxD
    ones = jnp.ones(params_XxD.shape[:-1] + (1,), params_XxD.dtype)
    return jnp.concatenate([ones, params_XxD[..., 1:]], axis=-1)


def offset(params_XxD: jax.Array, biases: bool) -> jax.Array:
    """The bias term of each row or column (0 without biases)."""
    if not biases:
        return jnp.zeros(params_XxD.shape[:-1], params_XxD.dtype)
    return params_XxD[..., 0]


def reconstruct(fit: FactorFit, rows_BxD: jax.Array | None = None,
                cols_CxD: jax.Array | None = None) -> jax.Array:
    """Predictions [B, C] for the given row and column parameters (defaults: the fit's own)."""
    rows = fit.rows_MxD if rows_BxD is None else rows_BxD
    cols = fit.cols_NxD if cols_CxD is None else cols_CxD
    return fit.mu + offset(rows, fit.biases)[:, None] + design(rows, fit.biases) @ cols.T


def r2_from_sse(sse: float, moments: Moments) -> float:
    """R^2 = 1 - MSE / Var over the usable observed entries (NaN for a constant matrix)."""
    if not moments.var > 0:
        return float("nan")
    return float(1.0 - (sse / moments.count) / moments.var)


# Moments and the Gram matrix ------------------------------------------------------------------


GRAM_MAX_ROWS = 4096  # up to here the moments pass also builds the Gram matrix


class Gram(NamedTuple):
    """Y Y^T and Y 1 of the usable rows, Y = Z - mean (0 elsewhere), over N real columns.

    Only meaningful when every usable entry is observed (`Moments.dense`).
    """

    k_MxM: jax.Array
    r_M: jax.Array
    n: int


@functools.partial(jax.jit, static_argnames=("with_gram",))
def _scan_chunk(z_MxC, rows_M, colw_C, shift, *, with_gram: bool):
    """Moments of a chunk around `shift` and, optionally, its Gram contribution."""
    valid = rows_M[:, None] & (colw_C[None, :] > 0) & jnp.isfinite(z_MxC)
    y = jnp.where(valid, z_MxC - shift, 0.0)
    rows_f = rows_M.astype(jnp.float32)
    col_sum = rows_f @ y  # reductions over rows as products: multithreaded on CPU
    col_count = rows_f @ valid.astype(jnp.float32)
    sq = (y * y).sum()
    if not with_gram:
        return col_sum, col_count, sq, None, None
    return col_sum, col_count, sq, y @ y.T, y.sum(1)


@jax.jit
def _chunk_mean(z_MxC, rows_M, colw_C):
    valid = rows_M[:, None] & (colw_C[None, :] > 0) & jnp.isfinite(z_MxC)
    return jnp.where(valid, z_MxC, 0.0).sum() / jnp.maximum(valid.sum(), 1)


def moments(chunks: ColumnChunks) -> Moments:
    """Mean, variance and column means of the usable entries, in one pass (cached on `chunks`).

    Sums are taken around the first chunk's mean, so the variance does not cancel. The same
    pass accumulates the Gram matrix of the usable rows (see `gram`) when there are at most
    GRAM_MAX_ROWS rows.
    """
    if chunks._moments is not None:
        return chunks._moments
    m, n = chunks.shape
    with_gram = m <= GRAM_MAX_ROWS
    first = next(iter(chunks))
    shift = float(_chunk_mean(first.z_MxC, chunks.rows_M, first.colw_C))
    n_rows = int(np.asarray(chunks.rows_M).sum())
    col_sums, col_counts, dense = [], [], []
    sq, k, r = 0.0, None, None
    for chunk in chunks:
        col_sum, col_count, sq_c, k_c, r_c = _scan_chunk(
            chunk.z_MxC, chunks.rows_M, chunk.colw_C, jnp.float32(shift), with_gram=with_gram)
        if with_gram:
            k, r = (k_c, r_c) if k is None else (k + k_c, r + r_c)
        col_sum, col_count = np.asarray(col_sum, np.float64), np.asarray(col_count, np.float64)
        sq += float(sq_c)
        col_sums.append(col_sum)
        col_counts.append(col_count)
        dense.append(int(round(col_count.sum())) == n_rows * int(np.asarray(chunk.colw_C).sum()))
    col_sum = np.concatenate(col_sums)[:n]
    col_count = np.concatenate(col_counts)[:n]
    count = int(round(col_count.sum()))
    if count == 0:
        raise ValueError("the matrix has no observed entry in the usable rows")
    delta = col_sum.sum() / count  # mean - shift
    mean = shift + delta
    var = max(sq / count - delta * delta, 0.0)
    col_mean = np.where(col_count > 0, col_sum / np.maximum(col_count, 1) + shift, mean)
    chunks._moments = Moments(
        mean=mean, var=var, count=count, sum_sq=(var + mean * mean) * count,
        col_mean_N=jnp.asarray(col_mean, jnp.float32), col_count_N=jnp.asarray(col_count),
        dense=tuple(dense))
    if with_gram and all(dense):
        k_c, r_c = _shift_gram(Gram(k, r, n), chunks.rows_M, -delta)  # recentre on the mean
        chunks._gram = Gram(k_c, r_c, n)
    return chunks._moments


def gram(chunks: ColumnChunks) -> Gram:
    """The Gram matrix of the usable rows, for dense fits (from the moments pass if it can)."""
    mom = moments(chunks)
    if not all(mom.dense):
        raise ValueError("the Gram route needs every usable entry observed")
    if chunks._gram is None:
        k, r = None, None
        for chunk in chunks:
            _, _, _, k_c, r_c = _scan_chunk(chunk.z_MxC, chunks.rows_M, chunk.colw_C,
                                            jnp.float32(mom.mean), with_gram=True)
            k, r = (k_c, r_c) if k is None else (k + k_c, r + r_c)
        chunks._gram = Gram(k, r, chunks.shape[1])
    return chunks._gram


def _shift_gram(g: Gram, rows_M: jax.Array, shift: float) -> tuple[jax.Array, jax.Array]:
    """Gram and row sums of Y + shift (usable rows only), exactly from those of Y."""
    t = rows_M.astype(jnp.float32)
    k = (g.k_MxM + shift * (g.r_M[:, None] * t[None, :] + t[:, None] * g.r_M[None, :])
         + shift * shift * g.n * t[:, None] * t[None, :])
    return k, g.r_M + shift * g.n * t


# Alternating least squares --------------------------------------------------------------------


def _outer_flat(x_XxD):
    d = x_XxD.shape[-1]
    return (x_XxD[:, :, None] * x_XxD[:, None, :]).reshape(x_XxD.shape[0], d * d)


@functools.partial(jax.jit, static_argnames=("biases", "dense"))
def _sweep_chunk(z_MxC, colw_C, rows_M, rows_MxD, mu, reg, *, biases: bool, dense: bool):
    """Solves the chunk's column parameters, then returns the row statistics they imply."""
    m, c = z_MxC.shape
    d = rows_MxD.shape[1]
    eye = jnp.eye(d, dtype=jnp.float32)
    valid = rows_M[:, None] & (colw_C[None, :] > 0)
    if not dense:
        valid = valid & jnp.isfinite(z_MxC)
    valid_f = valid.astype(jnp.float32)
    x_MxD = design(rows_MxD, biases) * rows_M[:, None].astype(jnp.float32)
    y_MxC = jnp.where(valid, z_MxC - mu - offset(rows_MxD, biases)[:, None], 0.0)
    rhs_CxD = y_MxC.T @ x_MxD
    if dense:
        gram_DxD = x_MxD.T @ x_MxD + reg * eye
        cols_CxD = jnp.linalg.solve(gram_DxD, rhs_CxD.T).T
    else:
        gram_CxDxD = (valid_f.T @ _outer_flat(x_MxD)).reshape(c, d, d) + reg * eye[None]
        cols_CxD = jnp.linalg.solve(gram_CxDxD, rhs_CxD[:, :, None])[:, :, 0]
    e_CxD = design(cols_CxD, biases) * colw_C[:, None]
    y2_MxC = jnp.where(valid, z_MxC - mu - offset(cols_CxD, biases)[None, :], 0.0)
    h_MxD = y2_MxC @ e_CxD
    yy_M = (y2_MxC * y2_MxC).sum(1)
    if dense:
        gram_MxDxD = jnp.broadcast_to((e_CxD.T @ e_CxD)[None], (m, d, d))
    else:
        gram_MxDxD = (valid_f @ _outer_flat(e_CxD)).reshape(m, d, d)
    return cols_CxD, (gram_MxDxD, h_MxD, yy_M, valid_f.sum(1))


@jax.jit
def _solve_rows(gram_MxDxD, h_MxD, yy_M, count_M, rows_M, old_MxD, reg, active_D):
    d = h_MxD.shape[1]
    a = gram_MxDxD + reg * jnp.eye(d, dtype=jnp.float32)[None]
    new_MxD = jnp.linalg.solve(a, h_MxD[:, :, None])[:, :, 0] * active_D[None, :]
    new_MxD = jnp.where(rows_M[:, None] & (count_M[:, None] > 0), new_MxD, 0.0)
    sse_M = (yy_M - 2.0 * (new_MxD * h_MxD).sum(1)
             + jnp.einsum("md,mde,me->m", new_MxD, gram_MxDxD, new_MxD))
    change = jnp.linalg.norm(new_MxD - old_MxD) / jnp.maximum(jnp.linalg.norm(new_MxD), 1e-12)
    return new_MxD, jnp.maximum(sse_M, 0.0), change


def _gram_stats(rows_MxD, k_MxM, r_M, n, rows_M, reg, biases):
    """Row-update statistics after a column update, from the Gram matrix alone.

    Columns: Phi = Y^T W - 1 w0^T with W = D S^-1, w0 = S^-1 D^T o (D the row design, o the
    row offsets, S = D^T D + reg I). Rows then need E^T E, (Y - 1 off^T) E and the residual
    norms, where E = Phi A + 1 a^T and off = Phi g select the column design and offsets.
    """
    d = rows_MxD.shape[1]
    eye = jnp.eye(d, dtype=jnp.float32)
    t = rows_M.astype(jnp.float32)
    x = design(rows_MxD, biases) * t[:, None]
    o = offset(rows_MxD, biases) * t
    s_inv = jnp.linalg.inv(x.T @ x + reg * eye)
    w = x @ s_inv
    w0 = s_inv @ (x.T @ o)
    kw = k_MxM @ w
    wr = w.T @ r_M
    ptp = w.T @ kw - jnp.outer(wr, w0) - jnp.outer(w0, wr) + n * jnp.outer(w0, w0)
    pt1 = wr - n * w0
    y_phi = kw - jnp.outer(r_M, w0)
    if biases:
        a = eye[0]
        sel = eye.at[0, 0].set(0.0)
        g = eye[0]
    else:
        a = jnp.zeros((d,), jnp.float32)
        sel = eye
        g = jnp.zeros((d,), jnp.float32)
    at_pt1 = sel.T @ pt1
    gram_e = sel.T @ ptp @ sel + jnp.outer(at_pt1, a) + jnp.outer(a, at_pt1) + n * jnp.outer(a, a)
    off_e = g @ (ptp @ sel + jnp.outer(pt1, a))
    h = y_phi @ sel + jnp.outer(r_M, a) - off_e[None, :]
    yy = jnp.diagonal(k_MxM) - 2.0 * (y_phi @ g) + g @ ptp @ g
    return gram_e, h, yy, w, w0


@functools.partial(jax.jit, static_argnames=("biases", "max_iters"))
def _als_gram(rows_MxD, k_MxM, r_M, n, rows_M, reg, tol, active_D, *, biases, max_iters):
    """ALS sweeps in the row space: exact for a complete matrix, no pass over the data."""
    t = rows_M[:, None]

    def solve(theta):
        gram_e, h, yy, _, _ = _gram_stats(theta, k_MxM, r_M, n, rows_M, reg, biases)
        a = gram_e + reg * jnp.eye(theta.shape[1], dtype=jnp.float32)
        new = jnp.where(t, jnp.linalg.solve(a, h.T).T * active_D[None, :], 0.0)
        return new

    def body(state):
        theta, it, _ = state
        new = solve(theta)
        change = jnp.linalg.norm(new - theta) / jnp.maximum(jnp.linalg.norm(new), 1e-12)
        return new, it + 1, change

    def cond(state):
        return (state[1] < max_iters) & (state[2] >= tol)

    theta, it, _ = jax.lax.while_loop(cond, body, (rows_MxD, 0, jnp.float32(jnp.inf)))
    gram_e, h, yy, w, w0 = _gram_stats(theta, k_MxM, r_M, n, rows_M, reg, biases)
    sse = yy - 2.0 * (theta * h).sum(1) + jnp.einsum("md,de,me->m", theta, gram_e, theta)
    return theta, it, jnp.where(rows_M, jnp.maximum(sse, 0.0), 0.0), w, w0


@jax.jit
def _cols_chunk(z_MxC, colw_C, rows_M, mu, w_MxD, w0_D):
    y = jnp.where(rows_M[:, None] & (colw_C[None, :] > 0), z_MxC - mu, 0.0)
    return y.T @ w_MxD - w0_D[None, :]


def fit_factor_model(chunks: ColumnChunks, rank: int, biases: bool, reg: float = 1.0,
                     max_iters: int = 50, tol: float = 1e-5, seed: int = 0,
                     init_rows_MxD: jax.Array | None = None,
                     active_rank: int | None = None, route: str = "auto") -> FactorFit:
    """Ridge ALS over the observed usable entries; one pass over the chunks per sweep.

    Row parameters start at b = 0 and p ~ N(0, 0.1^2) (p = 1 for a rank-1 model without
    biases, which makes the first sweeps a power iteration) unless `init_rows_MxD` is given.
    `active_rank` < rank fits that smaller rank in the same shapes (the other factors stay 0),
    so a sequence of ranks compiles once. With every usable entry observed (and route "auto"),
    the sweeps run on the Gram matrix of the rows (one shared pass over the data, then one
    pass for the column parameters); otherwise (or route "sweeps") each sweep is one pass over
    the chunks. Stops when the row parameters
    change by less than `tol` (relative) or after `max_iters` sweeps.
    """
    d = rank + int(biases)
    if d < 1:
        raise ValueError("a model needs rank >= 1 or biases")
    mom = moments(chunks)
    m, _ = chunks.shape
    mu = jnp.float32(mom.mean if biases else 0.0)
    p = 0.1 * jax.random.normal(jax.random.PRNGKey(seed), (m, rank), jnp.float32)
    if rank == 1 and not biases:
        p = jnp.ones((m, 1), jnp.float32)
    rows_MxD = jnp.concatenate([jnp.zeros((m, 1), jnp.float32), p], 1) if biases else p
    if init_rows_MxD is not None:
        rows_MxD = jnp.asarray(init_rows_MxD, jnp.float32)
    active = np.ones(d, np.float32)
    if active_rank is not None:
        active[int(biases) + active_rank:] = 0.0
    active = jnp.asarray(active)
    rows_MxD = jnp.where(chunks.rows_M[:, None], rows_MxD * active[None, :], 0.0)
    reg = jnp.float32(reg)
    if all(mom.dense) and route != "sweeps":
        g = gram(chunks)
        k, r = _shift_gram(g, chunks.rows_M, 0.0 if biases else mom.mean)
        rows_MxD, it, sse, w, w0 = _als_gram(rows_MxD, k, r, jnp.float32(g.n), chunks.rows_M,
                                             reg, jnp.float32(tol), active, biases=biases,
                                             max_iters=max_iters)
        cols = [_cols_chunk(c.z_MxC, c.colw_C, chunks.rows_M, mu, w, w0) for c in chunks]
        count = chunks.rows_M.astype(jnp.float32) * g.n
        return FactorFit(mu=mu, rows_MxD=rows_MxD, cols_NxD=chunks.unpad(cols), sse_M=sse,
                         count_M=count, biases=biases, iterations=int(it))
    it = 0
    for it in range(1, max_iters + 1):
        pieces, acc = [], None
        for chunk, dense in zip(chunks, mom.dense):
            cols, stats = _sweep_chunk(chunk.z_MxC, chunk.colw_C, chunks.rows_M, rows_MxD, mu,
                                       reg, biases=biases, dense=dense)
            pieces.append(cols)
            acc = stats if acc is None else jax.tree.map(jnp.add, acc, stats)
        gram_acc, h, yy, count = acc
        rows_MxD, sse, change = _solve_rows(gram_acc, h, yy, count, chunks.rows_M, rows_MxD, reg,
                                            active)
        if float(change) < tol:
            break
    return FactorFit(mu=mu, rows_MxD=rows_MxD, cols_NxD=chunks.unpad(pieces), sse_M=sse,
                     count_M=count, biases=biases, iterations=it)


def fit_additive(chunks: ColumnChunks, reg: float = 1.0, **kw) -> FactorFit:
    """z_ij ~ mu + b_i + c_j (ridge on b and c)."""
    return fit_factor_model(chunks, rank=0, biases=True, reg=reg, **kw)


def fit_multiplicative(chunks: ColumnChunks, reg: float = 1e-3, **kw) -> FactorFit:
    """z_ij ~ alpha_i * beta_j (rank 1, no biases)."""
    return fit_factor_model(chunks, rank=1, biases=False, reg=reg, **kw)


def fit_r2(fit: FactorFit, chunks: ColumnChunks) -> float:
    """In-sample R^2 of a fit over the usable observed entries."""
    return r2_from_sse(float(jnp.sum(fit.sse_M)), moments(chunks))


# Truncated SVD --------------------------------------------------------------------------------


class SVDFit(NamedTuple):
    """Leading components, ordered by singular value; sign fixed so each v has positive sum."""

    u_MxK: jax.Array
    s_K: jax.Array
    v_NxK: jax.Array
    r2_K: np.ndarray  # R^2 of ranks 1..K
    exact: bool  # eigendecomposition (nothing missing) rather than ALS per rank


@jax.jit
def _project_chunk(z_MxC, rows_M, u_MxK):
    z = jnp.where(rows_M[:, None] & jnp.isfinite(z_MxC), z_MxC, 0.0)
    return z.T @ u_MxK


def _orient(u_MxK, s_K, v_NxK):
    sign = jnp.where(v_NxK.sum(0) < 0, -1.0, 1.0)
    return u_MxK * sign[None, :], s_K, v_NxK * sign[None, :]


def _factors_to_svd(fit: FactorFit):
    """Orthonormal components of the low-rank product P Q^T (QR of both, SVD of the core)."""
    qp, rp = jnp.linalg.qr(fit.rows_MxD)
    qq, rq = jnp.linalg.qr(fit.cols_NxD)
    uc, s, vct = jnp.linalg.svd(rp @ rq.T)
    return qp @ uc, s, qq @ vct.T


def truncated_svd(chunks: ColumnChunks, max_rank: int = 10, reg: float = 1e-4,
                  max_iters: int = 100, tol: float = 1e-5) -> SVDFit:
    """Rank-1..K truncated SVD of the usable rows, with R^2 of each rank.

    Nothing missing: exact, from the eigendecomposition of Z Z^T (the shared Gram pass, one
    more for the right vectors). Entries missing: ALS of a rank-k model without biases per k, which
    is the least-squares rank-k fit to the observed entries.
    """
    mom = moments(chunks)
    m, n = chunks.shape
    k = int(min(max_rank, m, n))
    if all(mom.dense):
        k_MxM, _ = _shift_gram(gram(chunks), chunks.rows_M, mom.mean)
        evals, evecs = jnp.linalg.eigh(k_MxM)
        evals, evecs = evals[::-1][:k], evecs[:, ::-1][:, :k]
        s = jnp.sqrt(jnp.maximum(evals, 0.0))
        proj = chunks.unpad([_project_chunk(c.z_MxC, chunks.rows_M, evecs) for c in chunks])
        v = proj / jnp.maximum(s, 1e-12)[None, :]
        sse = mom.sum_sq - np.cumsum(np.asarray(evals, np.float64))
        r2 = np.array([r2_from_sse(max(e, 0.0), mom) for e in sse])
        u, s, v = _orient(evecs, s, v)
        return SVDFit(u, s, v, r2, exact=True)
    r2, fit = [], None
    fresh = 0.1 * jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
    for rank in range(1, k + 1):  # warm start: rank k - 1's rows plus a small new direction
        init = fresh if fit is None else fit.rows_MxD.at[:, rank - 1].set(fresh[:, rank - 1])
        fit = fit_factor_model(chunks, rank=k, biases=False, reg=reg, max_iters=max_iters,
                               tol=tol, init_rows_MxD=init, active_rank=rank)
        r2.append(fit_r2(fit, chunks))
    u, s, v = _orient(*_factors_to_svd(fit))
    return SVDFit(u, s, v, np.array(r2), exact=False)
