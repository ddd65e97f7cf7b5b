"""`lgmf`, `lgmf_additive`: the logistic matrix factorization of the paper's final code.

They follow AuCson/low-rank-forgetting, post_process/my_mf.py (LogisticMF, LogisticMFAdditive) and
run_matrix_completion.py (matrix_factorization_direct), on a binary forgetting matrix (lost
answers: entries 0/1). With Y [M + 1, N] the M training rows stacked with a test row and Mask
its observed entries,

    lgmf           P(Y[i, j] = 1) = sigmoid((W H)[i, j])        W [M + 1, r], H [r, N]
    lgmf_additive  P(Y[i, j] = 1) = sigmoid(w_i + h_j)          w [M + 1], h [N]

fitted by `iters` steps of gradient ascent on the masked Bernoulli log-likelihood with an L2
penalty nu / 2 (|W|^2 + |H|^2), H first and then W with the residual recomputed from the new H:

    H <- H + eta (W^T (Y Mask - Mask sigmoid(W H)) - nu H)
    W <- W + eta ((Y Mask - Mask sigmoid(W H)) H^T - nu W)

(the additive model sums the residual over rows for h and over columns for w). The start is
W ~ N(0, init_std) drawn by numpy.random.default_rng(seed), H ~ N(0, init_std) by
default_rng(seed + 1); N(0, 1) for w and h. The settings are those the final code runs with:
rank 5, eta 0.001, nu 0.1, 5000 iterations, init_std 0.005, seed 0.

There is no fold-in: for each (test task, seed) pair the model is refitted from scratch on the
training rows (every finite entry observed; NaN entries masked out) stacked with the test row,
observed at its k columns only (a repeated column is one observed entry); the prediction is the
fitted test row. The fits of a batch's pairs are one jitted `lax.fori_loop`, vmapped over the
pairs, in sub-batches whose [sub, M + 1, N] float32 temporaries stay under LGMF_MEMORY_BUDGET.
Each pair costs iters x 2 (M + 1) N sigmoids and, for lgmf, iters x 4 (M + 1) N r multiply-adds
(two matrix products per half step): the final code's cost, per test row and seed.

Predictions are the probabilities sigmoid(logits) of the test row; the protocol scores a binary
matrix at threshold 0.5 (predict/logistic.py), which is the final code's logits > 0. With the
training rows complete, lgmf_additive orders a test row's unobserved columns as their training
rates do (train_mean's order; h_j grows with column j's count): its row term w sets the level,
so it can win over train_mean on F1, precision and recall but hardly on AUC or Spearman.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict.logistic import check_binary
from forgetting_jax.predict.methods import Batch

LGMF_MEMORY_BUDGET = 1 << 30  # bytes of [sub, M + 1, N] float32 temporaries per sub-batch
_TEMPORARIES = 6  # [M + 1, N] arrays live at once per pair: Y, Mask, logits, sigmoid, residual, slack
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class LgmfConfig:
    """Settings of lgmf and lgmf_additive (the final code's defaults)."""

    rank: int = 5  # of lgmf (lgmf_additive has one parameter per row and per column)
    eta: float = 0.001  # step size of the gradient ascent
    nu: float = 0.1  # L2 penalty of W and H
    iters: int = 5000  # H then W updates
    init_std: float = 0.005  # of lgmf's start (lgmf_additive starts from N(0, 1))
    seed: int = 0  # default_rng(seed) draws W, default_rng(seed + 1) draws H


def initial_factors(m: int, n: int, config: LgmfConfig, additive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The start (W [m, r], H [r, n]), or (w [m], h [n]) when additive, as the final code draws it."""
    if additive:
        w = np.random.default_rng(config.seed).normal(0, 1, m)
        h = np.random.default_rng(config.seed + 1).normal(0, 1, n)
    else:
        w = np.random.default_rng(config.seed).normal(0, config.init_std, (m, config.rank))
        h = np.random.default_rng(config.seed + 1).normal(0, config.init_std, (config.rank, n))
    return w.astype(np.float32), h.astype(np.float32)


def _logits(w, h, additive: bool):
    return w[:, None] + h[None, :] if additive else jnp.matmul(w, h, precision=_HIGHEST)


def fit_logits(y_MxN: jax.Array, mask_MxN: jax.Array, w0, h0, config: LgmfConfig, additive: bool) -> jax.Array:
    """Fitted logits [M, N] of the rows y (0/1) observed where mask is 1, from the start (w0, h0)."""
    ym_MxN = y_MxN * mask_MxN
    eta, nu = jnp.float32(config.eta), jnp.float32(config.nu)

    def residual(w, h):
        return ym_MxN - mask_MxN * jax.nn.sigmoid(_logits(w, h, additive))

    def step(_, wh):
        w, h = wh
        r_MxN = residual(w, h)
        grad_h = r_MxN.sum(0) if additive else jnp.matmul(w.T, r_MxN, precision=_HIGHEST)
        h = h + eta * (grad_h - nu * h)
        r_MxN = residual(w, h)
        grad_w = r_MxN.sum(1) if additive else jnp.matmul(r_MxN, h.T, precision=_HIGHEST)
        return w + eta * (grad_w - nu * w), h

    w, h = jax.lax.fori_loop(0, config.iters, step, (w0, h0))
    return _logits(w, h, additive)


def stack_test_row(y_TxN: jax.Array, mask_TxN: jax.Array, obs_idx_K: jax.Array,
                   obs_val_K: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Y, Mask) [T + 1, N]: the training rows and a test row observed at its k columns only."""
    n = y_TxN.shape[1]
    row_mask_N = jnp.zeros(n, jnp.float32).at[obs_idx_K].set(1.0)
    row_y_N = jnp.zeros(n, jnp.float32).at[obs_idx_K].set(obs_val_K.astype(jnp.float32))
    return (jnp.concatenate([y_TxN, row_y_N[None, :]]), jnp.concatenate([mask_TxN, row_mask_N[None, :]]))


@functools.partial(jax.jit, static_argnames=("config", "additive"))
def _test_row_logits(y_TxN, mask_TxN, w0, h0, obs_idx_SxK, obs_val_SxK, *, config, additive):
    def one(obs_idx_K, obs_val_K):
        y_MxN, mask_MxN = stack_test_row(y_TxN, mask_TxN, obs_idx_K, obs_val_K)
        return fit_logits(y_MxN, mask_MxN, w0, h0, config, additive)[-1]

    return jax.vmap(one)(obs_idx_SxK, obs_val_SxK)


def sub_batch(pairs: int, m: int, n: int, budget: int = LGMF_MEMORY_BUDGET) -> int:
    """Pairs per sub-batch: the fewest sub-batches that keep [sub, m, n] temporaries under the
    budget, then the smallest equal size that covers the pairs with that many."""
    most = max(1, budget // (_TEMPORARIES * 4 * m * n))
    count = -(-pairs // most)
    return -(-pairs // count)


class LgmfMethod:
    """The protocol's interface (predict/methods.py) for lgmf (additive=False) and lgmf_additive."""

    def __init__(self, config: LgmfConfig = LgmfConfig(), additive: bool = False):
        self.config, self.additive = config, additive
        self.name = "lgmf_additive" if additive else "lgmf"

    def fit(self, chunks: ColumnChunks) -> Any:
        """The training rows: (Y [T, N] with NaN read as 0, Mask [T, N] of the finite entries)."""
        train = np.asarray(chunks.z_MxN)[np.asarray(chunks.rows_M)]
        check_binary(self.name, train)
        mask = np.isfinite(train)
        return jnp.asarray(np.where(mask, train, 0.0), jnp.float32), jnp.asarray(mask, jnp.float32)

    def logits(self, state, batch: Batch) -> jax.Array:
        """The fitted test rows' logits [B, N], one refit per pair."""
        y_TxN, mask_TxN = state
        obs_idx, obs_val = jnp.asarray(batch.obs_idx_BxK), jnp.asarray(batch.obs_val_BxK, jnp.float32)
        b, (t, n) = obs_idx.shape[0], y_TxN.shape
        w0, h0 = (jnp.asarray(a) for a in initial_factors(t + 1, n, self.config, self.additive))
        size = sub_batch(b, t + 1, n)
        out = []
        for start in range(0, b, size):
            sel = np.minimum(np.arange(start, start + size), b - 1)  # pad with the last pair
            out.append(_test_row_logits(y_TxN, mask_TxN, w0, h0, obs_idx[sel], obs_val[sel],
                                        config=self.config, additive=self.additive)[:min(size, b - start)])
        return jnp.concatenate(out)

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        return jax.nn.sigmoid(self.logits(state, batch))
