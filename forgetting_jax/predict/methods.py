"""Completion methods: fit the training tasks' rows once, then fold in each unseen task's row.

Tasks are the rows (the "users" of the reference implementation) and upstream examples the
columns, so an unseen task is a new row with k observed entries. Each method has two parts:

- `fit(chunks)`: a model of the training rows (one set of passes over the matrix);
- `complete(state, batch, chunks)`: for a batch of (test task, seed) pairs, the predicted rows
  [B, N] from their k observed entries. Fold-ins are vmapped over the batch and jit-compiled
  with static shapes (k and the batch size are fixed), so a protocol is a few compiled calls.

Factor methods (additive, multiplicative, als) fold a new row in as the posterior mean of its
parameters under a Gaussian prior fitted to the training rows' parameters, with the training
residual variance as noise: with 30 entries this shrinks the few free parameters towards the
typical task instead of towards zero. `knn` is surprise's KNNBaseline with tasks as users:
the additive baseline plus the similarity-weighted residuals of the k nearest training tasks,
similarity being the shrunk baseline-Pearson over the observed columns.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis import fits
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.experiment import PredictSettings


@dataclasses.dataclass(frozen=True)
class CompletionConfig:
    """Settings of the completion methods."""

    rank: int = PredictSettings.rank  # als
    reg: float = PredictSettings.reg  # ridge of every training fit
    max_iters: int = 30  # ALS sweeps at most
    tol: float = 1e-4  # ALS stops when row parameters change less than this (relative)
    knn_k: int = 40  # neighbours (surprise's default)
    shrinkage: float = 100.0  # of the baseline-Pearson similarity (surprise's default)
    seed: int = 0


class Batch(NamedTuple):
    """A batch of (test task, seed) pairs."""

    task_B: np.ndarray  # row index of the test task in the matrix
    key_B: jax.Array  # PRNG key of each pair
    obs_idx_BxK: jax.Array  # observed columns
    obs_val_BxK: jax.Array  # their values


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["mean_D", "precision_DxD", "sigma2"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class RowPrior:
    """Gaussian prior over a row's parameters and the noise variance, from the training rows."""

    mean_D: jax.Array
    precision_DxD: jax.Array
    sigma2: jax.Array


def row_prior(fit: fits.FactorFit, rows_M: jax.Array) -> RowPrior:
    """Mean and covariance of the training rows' parameters; noise = training residual MSE."""
    w = rows_M.astype(jnp.float32)[:, None]
    n = jnp.maximum(w.sum(), 1.0)
    mean = (fit.rows_MxD * w).sum(0) / n
    dev = (fit.rows_MxD - mean[None, :]) * w
    d = fit.rows_MxD.shape[1]
    cov = dev.T @ dev / jnp.maximum(n - 1.0, 1.0)
    cov = cov + (1e-4 * jnp.trace(cov) / d + 1e-8) * jnp.eye(d, dtype=jnp.float32)
    sigma2 = jnp.maximum(fit.sse_M.sum() / jnp.maximum(fit.count_M.sum(), 1.0), 1e-12)
    return RowPrior(mean, jnp.linalg.inv(cov), sigma2)


def fold_in(fit: fits.FactorFit, prior: RowPrior, obs_idx_K: jax.Array,
            obs_val_K: jax.Array) -> jax.Array:
    """Posterior mean of one new row's parameters [D] given its observed entries."""
    cols_KxD = fit.cols_NxD[obs_idx_K]
    x_KxD = fits.design(cols_KxD, fit.biases)
    y_K = obs_val_K - fit.mu - fits.offset(cols_KxD, fit.biases)
    a = x_KxD.T @ x_KxD / prior.sigma2 + prior.precision_DxD
    b = x_KxD.T @ y_K / prior.sigma2 + prior.precision_DxD @ prior.mean_D
    return jnp.linalg.solve(a, b)


@jax.jit
def _complete_factor(fit, prior, obs_idx_BxK, obs_val_BxK):
    rows_BxD = jax.vmap(fold_in, in_axes=(None, None, 0, 0))(fit, prior, obs_idx_BxK,
                                                             obs_val_BxK)
    return fits.reconstruct(fit, rows_BxD)


class FactorMethod:
    """additive (rank 0 + biases), multiplicative (rank 1, no biases), als (rank r + biases)."""

    def __init__(self, name: str, rank: int, biases: bool, config: CompletionConfig):
        self.name, self.rank, self.biases, self.config = name, rank, biases, config

    def fit(self, chunks: ColumnChunks) -> Any:
        c = self.config
        fit = fits.fit_factor_model(chunks, rank=self.rank, biases=self.biases, reg=c.reg,
                                    max_iters=c.max_iters, tol=c.tol, seed=c.seed)
        return fit, row_prior(fit, chunks.rows_M)

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        fit, prior = state
        return _complete_factor(fit, prior, batch.obs_idx_BxK, batch.obs_val_BxK)


def knn_weights(fit: fits.FactorFit, b_test: jax.Array, obs_idx_K: jax.Array,
                obs_val_K: jax.Array, zobs_MxK: jax.Array, rows_M: jax.Array, k: int,
                shrinkage: float) -> jax.Array:
    """Weights [M] of the k training tasks most similar to a new row (0 elsewhere).

    Similarity is surprise's pearson_baseline: the correlation, without centring, of residuals
    from the additive baseline over the commonly observed columns, times (n - 1) / (n - 1 +
    shrinkage); only positive similarities weigh.
    """
    c_K = fits.offset(fit.cols_NxD[obs_idx_K], True)
    e_t = obs_val_K - fit.mu - b_test - c_K
    valid = jnp.isfinite(zobs_MxK) & rows_M[:, None]
    e_v = jnp.where(valid, zobs_MxK - fit.mu - fits.offset(fit.rows_MxD, True)[:, None]
                    - c_K[None, :], 0.0)
    n = valid.sum(1).astype(jnp.float32)
    num = (e_v * e_t[None, :]).sum(1)
    den = jnp.sqrt((e_v * e_v).sum(1) * jnp.where(valid, (e_t * e_t)[None, :], 0.0).sum(1))
    sim = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    sim = sim * (n - 1.0) / (n - 1.0 + shrinkage)
    sim = jnp.where(rows_M & (n > 0), sim, -jnp.inf)
    vals, idx = jax.lax.top_k(sim, k)
    return jnp.zeros_like(sim).at[idx].set(jnp.where(vals > 0, vals, 0.0))


@functools.partial(jax.jit, static_argnames=("k", "shrinkage"))
def _knn_fold_in(fit, prior, obs_idx_BxK, obs_val_BxK, zobs_BxMxK, rows_M, *, k, shrinkage):
    rows_BxD = jax.vmap(fold_in, in_axes=(None, None, 0, 0))(fit, prior, obs_idx_BxK,
                                                             obs_val_BxK)
    b_B = rows_BxD[:, 0]
    w_BxM = jax.vmap(knn_weights, in_axes=(None, 0, 0, 0, 0, None, None, None))(
        fit, b_B, obs_idx_BxK, obs_val_BxK, zobs_BxMxK, rows_M, k, shrinkage)
    return b_B, w_BxM


@functools.partial(jax.jit, static_argnames=("finite",))
def _knn_chunk(z_MxC, colw_C, rows_M, fit_mu, b_M, c_C, b_B, w_BxM, *, finite: bool):
    """Baseline plus weighted neighbour residuals for one chunk of columns: [B, C]."""
    w_BxM = w_BxM * rows_M.astype(jnp.float32)[None, :]
    if finite:  # the residual matrix never materialises: W (Z - mu - b - c) by parts
        num = (w_BxM @ z_MxC - (w_BxM @ (fit_mu + b_M))[:, None]
               - w_BxM.sum(1)[:, None] * c_C[None, :])
        den = jnp.broadcast_to(w_BxM.sum(1)[:, None], num.shape)
    else:
        valid = rows_M[:, None] & (colw_C[None, :] > 0) & jnp.isfinite(z_MxC)
        e_MxC = jnp.where(valid, z_MxC - fit_mu - b_M[:, None] - c_C[None, :], 0.0)
        num = w_BxM @ e_MxC
        den = w_BxM @ valid.astype(jnp.float32)
    base = fit_mu + b_B[:, None] + c_C[None, :]
    return base + jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


class KnnMethod:
    """KNNBaseline with tasks as users: additive baseline + k-nearest-task residuals.

    One difference from surprise, for scale: the k neighbours are chosen once per row (the most
    similar training tasks) and each column averages those of them that observed it, rather
    than re-choosing k among the tasks that observed each column. With a complete training
    matrix the two are identical.
    """

    name = "knn"

    def __init__(self, config: CompletionConfig):
        self.config = config

    def fit(self, chunks: ColumnChunks) -> Any:
        c = self.config
        fit = fits.fit_factor_model(chunks, rank=0, biases=True, reg=c.reg,
                                    max_iters=c.max_iters, tol=c.tol, seed=c.seed)
        others = np.flatnonzero(~np.asarray(chunks.rows_M))
        others_finite = all(bool(np.isfinite(chunks.z_MxN[i]).all()) for i in others)
        finite = tuple(d and others_finite for d in fits.moments(chunks).dense)
        return fit, row_prior(fit, chunks.rows_M), finite

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        fit, prior, finite = state
        b, kk = batch.obs_idx_BxK.shape
        m = chunks.shape[0]
        idx = np.asarray(batch.obs_idx_BxK).ravel()
        zobs = np.asarray(chunks.z_MxN[:, idx], np.float32).reshape(m, b, kk).transpose(1, 0, 2)
        k = int(min(self.config.knn_k, m))
        b_B, w_BxM = _knn_fold_in(fit, prior, batch.obs_idx_BxK, batch.obs_val_BxK,
                                  jnp.asarray(zobs), chunks.rows_M, k=k,
                                  shrinkage=float(self.config.shrinkage))
        b_M = fits.offset(fit.rows_MxD, True)
        c_N = fits.offset(fit.cols_NxD, True)
        pieces = []
        c_N = jnp.pad(c_N, (0, len(chunks) * chunks.size - c_N.shape[0]))
        for chunk, chunk_finite in zip(chunks, finite):
            c_C = jax.lax.dynamic_slice_in_dim(c_N, chunk.start, chunks.size)
            pieces.append(_knn_chunk(chunk.z_MxC, chunk.colw_C, chunks.rows_M, fit.mu, b_M,
                                     c_C, b_B, w_BxM, finite=chunk_finite).T)
        return chunks.unpad(pieces).T
