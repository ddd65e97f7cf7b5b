"""Planted forgetting matrices with known structure, for tests, demos and benchmarks."""

import numpy as np


def planted_matrix(m: int, n: int, kind: str = "low_rank", rank: int = 3, noise: float = 0.1,
                   missing: float = 0.0, seed: int = 0, chunk_columns: int = 1 << 16
                   ) -> np.ndarray:
    """A float32 [m, n] matrix: signal of the given kind plus N(0, noise^2), NaN at `missing`.

    kind: "additive" (mu + a_i + b_j), "rank1" (alpha_i * beta_j, positive-dominant like real
    forgetting), "low_rank" (sum of `rank` components with decaying scales), or "forgetting"
    (additive and multiplicative parts plus `rank` weaker components: the shape of the paper's
    matrices, where rank 1 explains about half the variance). Built column block by column
    block so large matrices never need a second full copy.
    """
    rng = np.random.default_rng(seed)
    alpha = rng.lognormal(0.0, 0.5, m).astype(np.float32)
    a = rng.normal(0.0, 1.0, m).astype(np.float32)
    scales = (1.0 / np.arange(1, rank + 1)).astype(np.float32)
    u = (rng.normal(0.0, 1.0, (m, rank)) * scales).astype(np.float32)
    out = np.empty((m, n), np.float32)
    for start in range(0, n, chunk_columns):
        c = min(chunk_columns, n - start)
        if kind == "additive":
            block = 0.5 + a[:, None] + rng.normal(0.0, 1.0, c).astype(np.float32)[None, :]
        elif kind == "rank1":
            beta = rng.gamma(2.0, 0.5, c).astype(np.float32)
            block = alpha[:, None] * beta[None, :]
        elif kind == "low_rank":
            block = u @ rng.normal(0.0, 1.0, (rank, c)).astype(np.float32)
        elif kind == "forgetting":
            beta = rng.gamma(2.0, 0.5, c).astype(np.float32)
            bias = rng.normal(0.0, 0.3, c).astype(np.float32)
            v = rng.normal(0.0, 0.4, (rank, c)).astype(np.float32)
            block = (0.2 * a[:, None] + bias[None, :] + alpha[:, None] * beta[None, :]
                     + u @ v)
        else:
            raise ValueError(f"unknown kind {kind!r}")
        block = block + noise * rng.standard_normal((m, c), dtype=np.float32)
        if missing > 0:
            block[rng.random((m, c)) < missing] = np.nan
        out[:, start:start + c] = block
    return out
