"""Column chunks: stream a host matrix [M, N] through jit-compiled steps in fixed-shape pieces.

A forgetting matrix with a million upstream examples does not fit twice in memory, so every pass
over it (moments, ALS sweeps, neighbour sums) walks column blocks of one static shape. The last
block is padded with NaN columns whose weight is 0. `rows_M` marks the rows a fit may learn from
(the training tasks); the other rows are read but never used.
"""

from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CHUNK_ELEMENTS = 1 << 26  # 256 MB of float32 per block


class Chunk(NamedTuple):
    start: int
    z_MxC: jax.Array  # float32, NaN = missing (padding columns are NaN)
    colw_C: jax.Array  # float32, 1 for real columns, 0 for padding


class ColumnChunks:
    """Fixed-shape column blocks of `z_MxN`, with the mask of usable (training) rows."""

    def __init__(self, z_MxN: np.ndarray, rows_M: np.ndarray | None = None,
                 chunk_columns: int | None = None):
        if z_MxN.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {z_MxN.shape}")
        self.z_MxN = z_MxN
        m, n = z_MxN.shape
        self.shape = (m, n)
        rows = np.ones(m, bool) if rows_M is None else np.asarray(rows_M, bool)
        if rows.shape != (m,):
            raise ValueError(f"rows_M has shape {rows.shape}, expected ({m},)")
        self.rows_M = jnp.asarray(rows)
        if chunk_columns is None:
            chunk_columns = max(1024, DEFAULT_CHUNK_ELEMENTS // max(m, 1))
        self.size = int(min(n, chunk_columns))
        self.starts = list(range(0, n, self.size))
        self._cached: list[Chunk] | None = None
        self._moments = None  # caches of analysis.fits
        self._gram = None

    def __len__(self) -> int:
        return len(self.starts)

    def _make(self, start: int) -> Chunk:
        m, n = self.shape
        stop = min(start + self.size, n)
        block = self.z_MxN[:, start:stop]  # a strided view: device_put copies it once
        colw = np.ones(self.size, np.float32)
        if stop - start < self.size:
            pad = np.full((m, self.size - (stop - start)), np.nan, np.float32)
            block = np.concatenate([block, pad], axis=1)
            colw[stop - start:] = 0.0
        return Chunk(start, jax.device_put(block.astype(np.float32, copy=False)),
                     jnp.asarray(colw))

    def __iter__(self) -> Iterator[Chunk]:
        if self._cached is not None:
            yield from self._cached
            return
        if len(self.starts) == 1:
            self._cached = [self._make(0)]
            yield from self._cached
            return
        for start in self.starts:
            yield self._make(start)

    def unpad(self, pieces_CxD: list[jax.Array]) -> jax.Array:
        """Concatenates per-chunk results along columns (axis 0) and drops the padding."""
        return jnp.concatenate(pieces_CxD, axis=0)[: self.shape[1]]
