"""The replay baselines of the paper's final code (data_utils/replay_helper.py and the configs
configs/llm/replay_ocl/*_gt_mir.yaml, *_ppl_median.yaml, *_grad_prod_neg.yaml): which pool examples
they replay, as a fixed order (gt_mir) or as scores for the sampler (ppl_median, grad_prod_neg).

  gt_mir:N       repeated best-of-N: the pool in a seeded random order, cut into groups of N; pass
                 p takes the example ranked p-th by true forgetting in each group (pass 0: the most
                 forgotten of each), passes until the run's replay slots are filled; the chosen
                 examples are then shuffled (seeded). The final code's `repeated_bofn_sampling`
                 ranks each group with an ascending argsort of the sampling weights, so its pass 0
                 takes each group's least forgotten example; this module takes the most forgotten,
                 as maximally interfered retrieval (MIR) defines the baseline.
  ppl_median     score = -|q_j - 1/2|, q_j the rank of the base model's NLL of pool example j
                 among the pool's, scaled to [0, 1]: the examples of median perplexity first,
                 replayed highest score first (the final code's predef_score_max).
  grad_prod_neg  score = -(g_task . g_j) from the base model's per-example loss gradients projected
                 to P dimensions (matrix/gradients.py gradient_products: the final code's inner
                 product / P of its unscaled projections), divided by the score's range over the pool
                 (the final code's do_min_max_scale): examples whose gradient opposes the new task's
                 first, drawn with softmax(score / T) (predef_score_sample).
"""

from typing import Sequence

import numpy as np


def repeated_best_of_n(score_N: np.ndarray, pool_N: np.ndarray, count: int, n: int, seed: Sequence[int]
                       ) -> np.ndarray:
    """int64 [count]: the pool indices gt_mir:n replays, in replay order (see the module
    docstring). score_N: true forgetting (NaN: never chosen); count: the run's replay slots. When
    count exceeds the pool, the order repeats."""
    if n < 2:
        raise ValueError(f"gt_mir needs at least 2 candidates per group, got {n}")
    candidates = np.flatnonzero(np.asarray(pool_N, bool) & np.isfinite(score_N))
    if not candidates.size:
        raise ValueError("gt_mir: no pool example has a finite true forgetting")
    rng = np.random.Generator(np.random.PCG64([*seed, 2]))
    order = candidates[rng.permutation(candidates.size)]
    chosen: list[int] = []
    groups = [order[start:start + n] for start in range(0, order.size, n)]
    ranked = [group[np.argsort(-np.asarray(score_N)[group], kind="stable")] for group in groups]
    for rank in range(n):
        chosen.extend(int(group[rank]) for group in ranked if rank < group.size)
        if len(chosen) >= min(count, candidates.size):
            break
    picked = np.asarray(chosen[:count], np.int64)
    picked = picked[rng.permutation(picked.size)]
    if count > picked.size:  # more slots than pool examples: the order again
        picked = np.resize(picked, count)
    return picked


def ppl_median_scores(base_nll_N: np.ndarray, pool_N: np.ndarray) -> np.ndarray:
    """float64 [N]: -|q - 1/2| with q the rank of each pool example's base NLL among the pool's
    scaled to [0, 1] (ties by index); NaN outside the pool."""
    pool = np.asarray(pool_N, bool) & np.isfinite(base_nll_N)
    index = np.flatnonzero(pool)
    out = np.full(len(base_nll_N), np.nan)
    if index.size == 1:
        out[index] = 0.0
    elif index.size:
        ranks = np.empty(index.size)
        ranks[np.argsort(np.asarray(base_nll_N)[index], kind="stable")] = np.arange(index.size)
        out[index] = -np.abs(ranks / (index.size - 1) - 0.5)
    return out


def grad_prod_neg_scores(task_P: np.ndarray, example_NxP: np.ndarray, pool_N: np.ndarray) -> np.ndarray:
    """float64 [N]: -(task . example_j) divided by its range over the pool; NaN outside the pool
    (and for examples without a finite gradient)."""
    task = np.asarray(task_P, np.float64)
    products = np.asarray(example_NxP, np.float64) @ task
    pool = np.asarray(pool_N, bool) & np.isfinite(products)
    score = np.full(products.shape, np.nan)
    if pool.any():
        values = -products[pool]
        spread = float(values.max() - values.min())
        score[pool] = values / spread if spread > 0 else 0.0
    return score
