"""Per-row metrics of a predicted forgetting row against the truth, on unobserved entries only.

RMSE; with a threshold (forgotten = above it): F1, precision, recall (0 when undefined, as
scikit-learn) and ROC-AUC (NaN when a row has one class); Spearman; precision@K of the K most
forgotten examples. Rank metrics (AUC, Spearman) are computed over `rank_cols_R`, every column
or a fixed random subset for very wide matrices. Counts for pooled metrics come back too.
"""

import functools

import jax
import jax.numpy as jnp

from forgetting_jax.analysis.stats import masked_pearson, masked_ranks

METRICS = ("rmse", "f1", "precision", "recall", "auc", "spearman", "precision_at_k")
COUNTS = ("sq_err", "n", "tp", "fp", "fn")


def _ratio(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def row_metrics(pred_N: jax.Array, truth_N: jax.Array, eval_N: jax.Array, rank_cols_R: jax.Array,
                threshold: float, top_k: int) -> dict[str, jax.Array]:
    """Metrics of one row over the entries where `eval_N` holds."""
    n = eval_N.sum().astype(jnp.float32)
    err = jnp.where(eval_N, pred_N - truth_N, 0.0)
    sq_err = (err * err).sum()
    pos_true = eval_N & (truth_N > threshold)
    pos_pred = eval_N & (pred_N > threshold)
    tp = (pos_true & pos_pred).sum().astype(jnp.float32)
    fp = (pos_pred & ~pos_true).sum().astype(jnp.float32)
    fn = (pos_true & ~pos_pred).sum().astype(jnp.float32)

    pred_r, truth_r, eval_r = pred_N[rank_cols_R], truth_N[rank_cols_R], eval_N[rank_cols_R]
    ranks_pred = masked_ranks(pred_r, eval_r)
    pos_r = eval_r & (truth_r > threshold)
    n_pos = pos_r.sum().astype(jnp.float32)
    n_neg = eval_r.sum().astype(jnp.float32) - n_pos
    u_stat = jnp.where(pos_r, ranks_pred, 0.0).sum() - n_pos * (n_pos + 1.0) / 2.0
    auc = jnp.where((n_pos > 0) & (n_neg > 0), u_stat / jnp.maximum(n_pos * n_neg, 1.0), jnp.nan)
    spearman = masked_pearson(ranks_pred, masked_ranks(truth_r, eval_r), eval_r)

    truth_top, _ = jax.lax.top_k(jnp.where(eval_N, truth_N, -jnp.inf), top_k)
    _, pred_top_idx = jax.lax.top_k(jnp.where(eval_N, pred_N, -jnp.inf), top_k)
    # min() rather than [top_k - 1]: XLA turns an indexed top-k into a full sort on CPU.
    hits = eval_N[pred_top_idx] & (truth_N[pred_top_idx] >= truth_top.min())
    return {
        "rmse": jnp.sqrt(sq_err / jnp.maximum(n, 1.0)),
        "f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "auc": auc,
        "spearman": spearman,
        "precision_at_k": hits.mean(),
        "sq_err": sq_err, "n": n, "tp": tp, "fp": fp, "fn": fn,
    }


def eval_mask(truth_N: jax.Array, obs_idx_K: jax.Array) -> jax.Array:
    """Entries to score: observed in the truth and not among the k given to the method."""
    return jnp.isfinite(truth_N).at[obs_idx_K].set(False)


@functools.partial(jax.jit, static_argnames=("top_k", "score_observed"))
def batch_metrics(pred_BxN: jax.Array, truth_TxN: jax.Array, pos_B: jax.Array,
                  obs_idx_BxK: jax.Array, rank_cols_R: jax.Array, threshold: jax.Array,
                  top_k: int, score_observed: bool = False) -> dict[str, jax.Array]:
    """`row_metrics` of each pair of a batch; pair b is test row `pos_B[b]` of `truth_TxN`.

    score_observed: also score the k observed entries (every finite entry of the row), as the
    reference implementation computes its metrics; by default they are left out."""

    def one(pred_N, pos, obs_idx_K):
        truth_N = truth_TxN[pos]
        ev = jnp.isfinite(truth_N) if score_observed else eval_mask(truth_N, obs_idx_K)
        return row_metrics(pred_N, jnp.where(ev, truth_N, 0.0), ev, rank_cols_R, threshold,
                           top_k)

    return jax.vmap(one)(pred_BxN, pos_B, obs_idx_BxK)
