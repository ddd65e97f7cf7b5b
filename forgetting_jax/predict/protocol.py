"""The paper's evaluation protocol for forgetting prediction.

Test tasks are named or a seeded fraction of the rows; the other rows (or the named training rows)
train every method. For
each test task and seed, k columns among the task's observed entries are drawn without
replacement; each method predicts the row from them; metrics are computed on the remaining
observed entries. The draw of a pair depends only on (seed, task row), so every method sees
the same observed columns. Pairs run in fixed-size batches: one compiled call per batch for the
draws, the completions and the metrics.

`sampling="reference"` draws the observed columns as the paper's code does (the final code,
AuCson/low-rank-forgetting `create_masked_arr`, as the first version's), so that its numbers can
be reproduced: for seed s, `numpy.random.default_rng(s).choice(N, k)` (with replacement, so a
column may repeat; it then counts twice) over all columns, the same columns for every test task,
a missing observed value read as 0 (both run on np.nan_to_num(Z)). The metrics cover the
unobserved entries, as the final code's do; with `score_observed` they also cover the observed
entries, as the first version's (INK-USC/lm-forgetting-prediction-code) do.

`sampling="variance"`, `"leverage"` or `"spread"` chooses the observed columns as a practitioner
who can score only k upstream examples would (predict/selection.py): from the training rows only,
among the columns the test row observes (its observation mask, never its values). variance and
leverage are deterministic: a task sees the same k columns under every seed (ties broken by
base_seed), so the seeds then vary only the methods' own randomness; spread draws its columns
(leverage-weighted, without replacement) per seed, the same draw for every test task of a seed
up to the columns a task cannot observe.

Non-finite entries are never dropped silently: the result's "nonfinite" counts them (NaN and
+-inf) in the training rows and in the test rows; every fit and metric leaves them out.
"""

import functools
import logging
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from forgetting_jax.analysis.chunks import ColumnChunks
from forgetting_jax.experiment import PredictSettings
from forgetting_jax.predict import selection
from forgetting_jax.predict.methods import Batch
from forgetting_jax.predict.metrics import COUNTS, METRICS, batch_metrics

_LOG = logging.getLogger(__name__)
PAIR_MEMORY_BUDGET = 2 << 30  # bytes of [batch, N] float32 temporaries per batch


class ProtocolError(ValueError):
    """The protocol cannot run on this matrix with these settings."""


def select_test_tasks(tasks: Sequence[str], test_tasks: Sequence[str] | None = None,
                      test_fraction: float | None = None, split_seed: int = 0) -> np.ndarray:
    """Row indices of the test tasks: the named ones, or a seeded random fraction (sorted)."""
    m = len(tasks)
    if (test_tasks is None) == (test_fraction is None):
        raise ProtocolError("give either test tasks or a test fraction")
    if test_tasks is not None:
        index = {t: i for i, t in enumerate(tasks)}
        unknown = [t for t in test_tasks if t not in index]
        if unknown:
            raise ProtocolError(f"unknown test task(s) {unknown}; the matrix has {m} tasks")
        idx = np.array(sorted({index[t] for t in test_tasks}), np.int64)
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ProtocolError(f"test fraction must be in (0, 1), got {test_fraction}")
        n_test = int(min(m - 1, max(1, round(test_fraction * m))))
        idx = np.sort(np.random.default_rng(split_seed).choice(m, n_test, replace=False))
    if len(idx) == 0 or len(idx) >= m:
        raise ProtocolError(f"need at least one test and one training task, got {len(idx)} "
                            f"test tasks of {m}")
    return idx


def select_train_tasks(tasks: Sequence[str], train_tasks: Sequence[str], test_idx: np.ndarray) -> np.ndarray:
    """Row indices of the named training tasks (sorted); ProtocolError for an unknown name, a test
    task among them, or none."""
    index = {t: i for i, t in enumerate(tasks)}
    unknown = [t for t in train_tasks if t not in index]
    if unknown:
        raise ProtocolError(f"unknown training task(s) {unknown}; the matrix has {len(tasks)} tasks")
    idx = np.array(sorted({index[t] for t in train_tasks}), np.int64)
    both = sorted(set(idx.tolist()) & set(np.asarray(test_idx).tolist()))
    if both:
        raise ProtocolError(f"task(s) {[tasks[i] for i in both]} are both training and test tasks")
    if len(idx) == 0:
        raise ProtocolError("no training tasks")
    return idx


def pair_keys(base_seed: int, seeds_P: np.ndarray, tasks_P: np.ndarray) -> jax.Array:
    """PRNG key of each (seed, task row) pair."""
    base = jax.random.PRNGKey(base_seed)
    return jax.vmap(lambda s, t: jax.random.fold_in(jax.random.fold_in(base, s), t))(
        jnp.asarray(seeds_P, jnp.uint32), jnp.asarray(tasks_P, jnp.uint32))


def draw_columns(key: jax.Array, valid_N: jax.Array, k: int) -> jax.Array:
    """k distinct columns among the valid ones, uniformly at random."""
    scores = jnp.where(valid_N, jax.random.uniform(key, valid_N.shape), -1.0)
    return jax.lax.top_k(scores, k)[1]


@functools.partial(jax.jit, static_argnames=("k",))
def _draw_batch(key_B, truth_TxN, pos_B, *, k):
    def one(key, pos):
        truth = truth_TxN[pos]
        idx = draw_columns(key, jnp.isfinite(truth), k)
        return idx, truth[idx]

    return jax.vmap(one)(key_B, pos_B)


SAMPLINGS = ("uniform", "reference", "variance", "leverage", "spread")


def reference_columns(seeds_P: np.ndarray, n: int, k: int) -> np.ndarray:
    """The paper's code's observed columns of each pair [P, k]: default_rng(seed).choice(n, k)."""
    by_seed = {int(s): np.random.default_rng(int(s)).choice(np.arange(n), k) for s in np.unique(seeds_P)}
    return np.stack([by_seed[int(s)] for s in seeds_P]).astype(np.int32)


def informative_pair_columns(chunks: ColumnChunks, truth_TxN: np.ndarray, pos_P: np.ndarray, seed_P: np.ndarray,
                             k: int, kind: str, base_seed: int = 0) -> np.ndarray:
    """The observed columns of each pair [P, k] under an informative selection `kind`: scored
    once from the training rows (chunks.rows_M), then chosen per test row among its finite
    entries; variance and leverage per task (ties broken by base_seed), spread per (seed, task)."""
    scores = selection.column_scores(chunks, kind)
    valid = np.isfinite(truth_TxN)
    cache: dict[tuple[int, int], np.ndarray] = {}
    out = np.zeros((len(pos_P), k), np.int32)
    for i, (p, s) in enumerate(zip(pos_P.tolist(), seed_P.tolist())):
        key = (p, s if kind == "spread" else 0)
        if key not in cache:
            seed = [base_seed, s] if kind == "spread" else base_seed
            cache[key] = selection.choose(scores, k, kind, seed, valid[p])
        out[i] = cache[key]
    return out


def _nonfinite_by_part(z_MxN: np.ndarray, truth_TxN: np.ndarray, test_idx: np.ndarray,
                       names: Sequence[str]) -> dict[str, Any]:
    """{"train": NonFinite, "test": NonFinite} of the training and test rows; the matrix is
    streamed once (no copy of the training rows: it may be most of a very large matrix)."""
    from forgetting_jax.analysis.nonfinite import NonFinite, count_nonfinite

    whole = count_nonfinite(z_MxN, names)
    test = count_nonfinite(truth_TxN, [names[i] for i in test_idx])
    test_names = {names[i] for i in test_idx}
    n = z_MxN.shape[1]
    train = NonFinite(nan=whole.nan - test.nan, posinf=whole.posinf - test.posinf,
                      neginf=whole.neginf - test.neginf, total=(z_MxN.shape[0] - len(test_idx)) * n,
                      rows_affected={t: c for t, c in whole.rows_affected.items() if t not in test_names})
    return {"train": train, "test": test}


def _auto_batch(n_pairs: int, n_cols: int) -> int:
    return int(max(1, min(n_pairs, PAIR_MEMORY_BUDGET // (n_cols * 4 * 10))))


def run_protocol(z_MxN: np.ndarray, test_idx: np.ndarray, methods: dict[str, Any], k: int = PredictSettings.k,
                 seeds: int = PredictSettings.seeds, threshold: float = 0.0, top_k: int = 100,
                 max_rank_columns: int = 50_000, pair_batch: int | None = None,
                 chunk_columns: int | None = None, base_seed: int = 0,
                 log: Callable[[str], None] = _LOG.info, sampling: str = "uniform",
                 score_observed: bool = False, tasks: Sequence[str] | None = None,
                 train_idx: np.ndarray | None = None) -> dict[str, Any]:
    """Runs every method over test tasks x seeds; returns per-pair metrics and timings.

    sampling: "uniform" (the project's: k distinct observed columns per pair), "reference", or
    "variance", "leverage", "spread" (chosen from the training rows; see the module docstring
    and predict/selection.py); score_observed: also score the observed entries. tasks: the
    row names, for the non-finite counts. train_idx: the rows that train every method (None:
    every row that is not a test row; `select_train_tasks`).

    Returns {"pairs": {"task": [P], "seed": [P]}, "methods": {name: {"metrics": {metric: [P]},
    "seconds": s, "fit_seconds": s}}, "settings": {...}, "nonfinite": {"train": NonFinite
    dict, "test": NonFinite dict}}, pairs ordered task-major.
    """
    if sampling not in SAMPLINGS:
        raise ProtocolError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    m, n = z_MxN.shape
    test_idx = np.asarray(test_idx, np.int64)
    rows = np.ones(m, bool)
    rows[test_idx] = False
    if train_idx is not None:
        rows = np.zeros(m, bool)
        rows[np.asarray(train_idx, np.int64)] = True
        if rows[test_idx].any():
            raise ProtocolError("a test row is also a training row")
    truth_np = np.asarray(z_MxN[test_idx], np.float32)
    observed = np.isfinite(truth_np).sum(1)
    if k < 1:
        raise ProtocolError(f"k must be positive, got {k}")
    if seeds < 1:
        raise ProtocolError(f"seeds must be positive, got {seeds}")
    short = np.flatnonzero(observed <= k)
    if len(short) and sampling != "reference":
        i = short[0]
        raise ProtocolError(
            f"k={k} observed columns requested, but test row {int(test_idx[i])} has only "
            f"{int(observed[i])} observed entries (need more than k, to leave some to score)")
    if sampling == "reference" and k >= n:
        raise ProtocolError(f"k={k} observed columns requested of a matrix with {n} columns")
    top_k = int(max(1, min(top_k, int(observed.min()) - (0 if score_observed else k))))
    names = list(tasks) if tasks is not None else [str(i) for i in range(m)]
    nonfinite = _nonfinite_by_part(z_MxN, truth_np, test_idx, names)
    for part, counts in nonfinite.items():
        if counts.any:
            log(f"{part} rows: {counts.describe('Z')}")

    chunks = ColumnChunks(z_MxN, rows, chunk_columns)
    truth = jnp.asarray(truth_np)
    n_pairs = len(test_idx) * seeds
    pos_P = np.repeat(np.arange(len(test_idx)), seeds)
    seed_P = np.tile(np.arange(seeds), len(test_idx))
    keys_P = pair_keys(base_seed, seed_P, test_idx[pos_P])
    batch = pair_batch or _auto_batch(n_pairs, n)
    if n > max_rank_columns:
        rank_cols = np.sort(np.random.default_rng(base_seed).choice(n, max_rank_columns,
                                                                    replace=False))
    else:
        rank_cols = np.arange(n)
    rank_cols = jnp.asarray(rank_cols, jnp.int32)

    t0 = time.perf_counter()
    batches = []
    ref_cols_PxK = reference_columns(seed_P, n, k) if sampling == "reference" else None
    if sampling in selection.INFORMATIVE:
        ref_cols_PxK = informative_pair_columns(chunks, truth_np, pos_P, seed_P, k, sampling, base_seed)
    for start in range(0, n_pairs, batch):
        sel = np.minimum(np.arange(start, start + batch), n_pairs - 1)  # pad with the last pair
        if ref_cols_PxK is None:
            obs_idx, obs_val = _draw_batch(keys_P[sel], truth, jnp.asarray(pos_P[sel]), k=k)
        else:
            idx = ref_cols_PxK[sel]
            val = np.take_along_axis(truth_np[pos_P[sel]], idx, axis=1)
            obs_idx, obs_val = jnp.asarray(idx), jnp.asarray(np.where(np.isfinite(val), val, 0.0), jnp.float32)
        batches.append((sel, min(batch, n_pairs - start),
                        Batch(test_idx[pos_P[sel]], keys_P[sel], obs_idx, obs_val)))
    log(f"drew {k} observed columns for {n_pairs} pairs ({len(test_idx)} test tasks x {seeds} "
        f"seeds) in {time.perf_counter() - t0:.2f}s; {len(batches)} batch(es) of {batch}, "
        f"{len(chunks)} column chunk(s)")

    results: dict[str, Any] = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        state = method.fit(chunks)
        jax.block_until_ready(state)
        fit_seconds = time.perf_counter() - t0
        per_pair = {key: np.zeros(n_pairs, np.float64) for key in METRICS + COUNTS}
        for sel, count, b in batches:
            pred = method.complete(state, b, chunks)
            out = jax.device_get(batch_metrics(pred, truth, jnp.asarray(pos_P[sel]),
                                               b.obs_idx_BxK, rank_cols, jnp.float32(threshold),
                                               top_k=top_k, score_observed=score_observed))
            for key in per_pair:
                per_pair[key][sel[:count]] = out[key][:count]
        seconds = time.perf_counter() - t0
        results[name] = {"metrics": per_pair, "seconds": seconds, "fit_seconds": fit_seconds}
        log(f"{name}: rmse {np.sqrt(per_pair['sq_err'].sum() / per_pair['n'].sum()):.4f} "
            f"(pooled) in {seconds:.2f}s (fit {fit_seconds:.2f}s)")
    return {
        "pairs": {"task": test_idx[pos_P], "seed": seed_P},
        "methods": results,
        "settings": {"k": k, "seeds": seeds, "threshold": threshold, "top_k": top_k,
                     "rank_metric_columns": int(rank_cols.shape[0]), "pair_batch": batch,
                     "column_chunks": len(chunks), "base_seed": base_seed, "sampling": sampling,
                     "score_observed": bool(score_observed)},
        "nonfinite": {part: counts.as_dict() for part, counts in nonfinite.items()},
    }


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


HEADLINE = ("pooled", "pooled over every scored entry of the test matrix (all test tasks and seeds), as the "
            "paper reports RMSE and F1; the per-row means over (test task, seed) pairs stand beside them")


def summarize(run: dict[str, Any], tasks: Sequence[str], per_task: bool = True
              ) -> dict[str, Any]:
    """Means over test tasks and seeds (NaN-skipping), pooled metrics (the headline, HEADLINE)
    and per-task means."""
    task_P = run["pairs"]["task"]
    seed_P = run["pairs"]["seed"]
    out: dict[str, Any] = {}
    for name, res in run["methods"].items():
        met = res["metrics"]
        entry: dict[str, Any] = {key: _mean(met[key]) for key in METRICS}
        entry["seconds"] = res["seconds"]
        entry["fit_seconds"] = res["fit_seconds"]
        seed_means = [_mean(met["rmse"][seed_P == s]) for s in np.unique(seed_P)]
        entry["rmse_std_over_seeds"] = float(np.std([v for v in seed_means if v is not None]))
        tp, fp, fn = met["tp"].sum(), met["fp"].sum(), met["fn"].sum()
        entry["pooled"] = {
            "rmse": float(np.sqrt(met["sq_err"].sum() / max(met["n"].sum(), 1.0))),
            "f1": float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0,
            "precision": float(tp / (tp + fp)) if (tp + fp) else 0.0,
            "recall": float(tp / (tp + fn)) if (tp + fn) else 0.0,
        }
        if per_task:
            entry["per_task"] = {
                str(tasks[t]): {key: _mean(met[key][task_P == t]) for key in METRICS}
                for t in np.unique(task_P)}
        out[name] = entry
    return out
