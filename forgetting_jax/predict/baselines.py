"""Reference forecasters: training means, the mean of the observed entries, random, and the
representation-similarity forecaster of prior work.

They share the methods' interface (`fit(chunks)`, `complete(state, batch, chunks)`).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis import fits
from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.analysis.stats import cosine_similarity
from forgetting_jax.predict.methods import Batch


class TrainMean:
    """Each example's mean forgetting over the training tasks (the same row for every task)."""

    name = "train_mean"

    def fit(self, chunks: ColumnChunks) -> Any:
        return fits.moments(chunks).col_mean_N

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        return _broadcast_rows(state, batch.obs_idx_BxK.shape[0])


class ObservedMean:
    """The mean of the task's k observed entries, for every example."""

    name = "observed_mean"

    def fit(self, chunks: ColumnChunks) -> Any:
        return None

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        return _observed_mean(batch.obs_val_BxK, chunks.shape[1])


class RandomForecast:
    """Draws from a normal with the training entries' mean and variance (seeded per pair)."""

    name = "random"

    def fit(self, chunks: ColumnChunks) -> Any:
        mom = fits.moments(chunks)
        return jnp.float32(mom.mean), jnp.float32(np.sqrt(mom.var))

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        mean, sd = state
        return _random_rows(batch.key_B, mean, sd, chunks.shape[1])


class RepresentationSimilarity:
    """Cosine between a task's mean base-model hidden state and each example's, mapped onto the
    forgetting scale by a least-squares line fitted on the training rows.

    `task_MxD` and `example_NxD` are the embeddings (one row per task in the matrix, one per
    upstream example).
    """

    name = "rep_sim"

    def __init__(self, task_MxD: np.ndarray, example_NxD: np.ndarray):
        self.task_MxD = jnp.asarray(task_MxD, jnp.float32)
        self.example_NxD = jnp.asarray(example_NxD, jnp.float32)

    def fit(self, chunks: ColumnChunks) -> Any:
        n = chunks.shape[1]
        example = jnp.pad(self.example_NxD, ((0, len(chunks) * chunks.size - n), (0, 0)))
        acc = np.zeros(5)
        for chunk in chunks:
            ex = jax.lax.dynamic_slice_in_dim(example, chunk.start, chunks.size)
            acc += np.asarray(_sim_moments(chunk.z_MxC, chunk.colw_C, chunks.rows_M,
                                           self.task_MxD, ex), np.float64)
        count, s, z, ss, sz = acc
        var = ss / count - (s / count) ** 2
        slope = (sz / count - s * z / count ** 2) / var if var > 0 else 0.0
        intercept = z / count - slope * s / count
        return jnp.float32(intercept), jnp.float32(slope)

    def complete(self, state, batch: Batch, chunks: ColumnChunks) -> jax.Array:
        intercept, slope = state
        task = self.task_MxD[jnp.asarray(batch.task_B)]
        return intercept + slope * cosine_similarity(task, self.example_NxD)


@jax.jit
def _sim_moments(z_MxC, colw_C, rows_M, task_MxD, example_CxD):
    sim = cosine_similarity(task_MxD, example_CxD)
    valid = rows_M[:, None] & (colw_C[None, :] > 0) & jnp.isfinite(z_MxC)
    s = jnp.where(valid, sim, 0.0)
    z = jnp.where(valid, z_MxC, 0.0)
    return jnp.stack([valid.sum().astype(jnp.float32), s.sum(), z.sum(), (s * s).sum(),
                      (s * z).sum()])


@functools.partial(jax.jit, static_argnames="b")
def _broadcast_rows(row_N: jax.Array, b: int) -> jax.Array:
    return jnp.broadcast_to(row_N[None, :], (b, row_N.shape[0]))


@functools.partial(jax.jit, static_argnames="n")
def _observed_mean(obs_val_BxK: jax.Array, n: int) -> jax.Array:
    return jnp.broadcast_to(obs_val_BxK.mean(1)[:, None], (obs_val_BxK.shape[0], n))


@functools.partial(jax.jit, static_argnames="n")
def _random_rows(key_B: jax.Array, mean, sd, n: int) -> jax.Array:
    draw = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (n,), jnp.float32))
    return mean + sd * draw(key_B)
