"""Refit per pair: a completion method fitted anew for one test row, as the reference runs.

The protocol (`forgetting_jax.predict.protocol`) fits each method once on the training rows and
folds every (test task, seed) pair in. The reference implementation instead refits its model for
every pair, on the training rows plus the test row with its k observed entries, and reads that
row's prediction off the new fit. `refit_predict` runs this project's methods the same way:

1. the method's training fit (`fit_factor_model`, cold-started) on the M + 1 rows, the test row
   holding its k observed entries and NaN elsewhere, so those entries move the global mean and
   the column parameters;
2. the method's own prediction rule for that row: the fold-in under the Gaussian prior of the
   training rows' parameters (additive, multiplicative, als), or, for knn, the additive baseline
   plus the residuals of the most similar training tasks (the test row is never its own
   neighbour).

The only difference from the protocol is step 1's extra row, so with many training rows the
prediction approaches the protocol's fit-once fold-in; the refit costs one full fit per pair.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.predict import registry
from forgetting_jax.predict.methods import Batch, CompletionConfig, row_prior

METHODS = registry.COMPLETION  # additive, multiplicative, als, knn


def augment(z_train_MxN: np.ndarray, obs_idx_K: Sequence[int], obs_val_K: Sequence[float]
            ) -> np.ndarray:
    """The training rows [M, N] plus a last row holding the observed entries (NaN elsewhere)."""
    z_train_MxN = np.asarray(z_train_MxN, np.float32)
    if z_train_MxN.ndim != 2:
        raise ValueError(f"expected a 2-D training matrix, got shape {z_train_MxN.shape}")
    m, n = z_train_MxN.shape
    idx = np.asarray(obs_idx_K, np.int64)
    val = np.asarray(obs_val_K, np.float32)
    if idx.ndim != 1 or idx.shape != val.shape or len(idx) == 0:
        raise ValueError(f"need k >= 1 observed columns and as many values, got {idx.shape} "
                         f"and {val.shape}")
    if idx.min() < 0 or idx.max() >= n or len(np.unique(idx)) != len(idx):
        raise ValueError(f"observed columns must be distinct and in [0, {n})")
    if not np.isfinite(val).all():
        raise ValueError("observed values must be finite")
    z = np.full((m + 1, n), np.nan, np.float32)
    z[:m] = z_train_MxN
    z[m, idx] = val
    return z


def refit_predict(method_name: str, z_train_MxN: np.ndarray, obs_idx_K: Sequence[int],
                  obs_val_K: Sequence[float], config: CompletionConfig = CompletionConfig(),
                  chunk_columns: int | None = None) -> np.ndarray:
    """The predicted row [N] of a new task from a fit on the training rows plus its k entries.

    method_name: one of additive, multiplicative, als, knn (`config` as for the protocol).
    z_train_MxN: the training rows, NaN = missing. obs_idx_K, obs_val_K: the new row's observed
    columns and values. Every call is an independent fit; the compiled steps are reused across
    calls with the same shapes.
    """
    if method_name not in METHODS:
        raise ValueError(f"refit_predict supports {', '.join(METHODS)}, got {method_name!r}")
    z = augment(z_train_MxN, obs_idx_K, obs_val_K)
    m = z.shape[0] - 1
    method = registry.build_methods([method_name], config)[method_name]
    state = method.fit(ColumnChunks(z, chunk_columns=chunk_columns))
    train_M = np.ones(m + 1, bool)
    train_M[m] = False
    fit = state[0]
    state = (fit, row_prior(fit, jnp.asarray(train_M))) + tuple(state[2:])
    k = len(np.asarray(obs_idx_K))
    batch = Batch(task_B=np.array([m]), key_B=jax.random.PRNGKey(0)[None],
                  obs_idx_BxK=jnp.asarray(np.asarray(obs_idx_K, np.int32)).reshape(1, k),
                  obs_val_BxK=jnp.asarray(np.asarray(obs_val_K, np.float32)).reshape(1, k))
    pred = method.complete(state, batch, ColumnChunks(z, train_M, chunk_columns))
    return np.asarray(pred[0])
