"""Figures of a forgetting matrix (matplotlib, Agg backend). Each function returns a Figure."""

import textwrap
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from forgetting_jax.analysis.stats import finite_means  # noqa: E402

MAX_HEATMAP_COLUMNS = 2000


def heatmap(z_MxN: np.ndarray, tasks: Sequence[str]) -> plt.Figure:
    """Z with rows and columns ordered by their means (columns evenly subsampled if wide)."""
    means = finite_means(z_MxN)
    row_mean, col_mean = means.row_mean_M, means.col_mean_N
    row_order = np.argsort(np.where(np.isfinite(row_mean), row_mean, -np.inf))[::-1]
    col_order = np.argsort(np.where(np.isfinite(col_mean), col_mean, -np.inf))[::-1]
    if col_order.shape[0] > MAX_HEATMAP_COLUMNS:
        col_order = col_order[np.linspace(0, col_order.shape[0] - 1,
                                          MAX_HEATMAP_COLUMNS).astype(int)]
    shown = z_MxN[:, col_order][row_order]
    finite = np.abs(shown[np.isfinite(shown)])  # +-inf would make the colour scale infinite
    lim = (float(np.percentile(finite, 99)) if finite.size else 0.0) or 1.0
    m = len(tasks)
    fig, ax = plt.subplots(figsize=(10, max(3.0, min(12.0, 0.18 * m + 1.5))))
    im = ax.imshow(shown, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   interpolation="nearest")
    ax.set_xlabel(f"upstream examples, by mean forgetting ({shown.shape[1]} of "
                  f"{z_MxN.shape[1]} shown)")
    ax.set_ylabel("tasks, by mean forgetting")
    if m <= 80:
        ax.set_yticks(range(m))
        ax.set_yticklabels([str(tasks[i]) for i in row_order], fontsize=6)
    fig.colorbar(im, ax=ax, label="forgetting (NLL increase)")
    fig.tight_layout()
    return fig


def r2_by_rank(r2_K: np.ndarray, additive: float, multiplicative: float, item_only: float | None = None,
               task_only: float | None = None) -> plt.Figure:
    """R^2 of rank-1..K truncated SVD beside the additive and multiplicative fits and the
    item-only (column means) and task-only (row means) baselines (when given)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ranks = np.arange(1, len(r2_K) + 1)
    ax.plot(ranks, r2_K, "o-", label="rank-k SVD")
    ax.axhline(additive, color="tab:green", ls="--", label=f"additive ({additive:.3f})")
    ax.axhline(multiplicative, color="tab:red", ls=":",
               label=f"multiplicative ({multiplicative:.3f})")
    levels = [additive, multiplicative]
    for value, label, color, style in ((item_only, "item only", "tab:purple", "-."),
                                       (task_only, "task only", "tab:brown", (0, (1, 3)))):
        if value is not None and np.isfinite(value):
            ax.axhline(value, color=color, ls=style, label=f"{label} ({value:.3f})")
            levels.append(value)
    ax.set_xlabel("rank k")
    ax.set_ylabel("R$^2$")
    ax.set_xticks(ranks)
    finite = [float(v) for v in list(r2_K) + levels if np.isfinite(v)]
    ax.set_ylim(min([0.0] + finite), 1.0)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def components(u_MxK: np.ndarray, s_K: np.ndarray, v_NxK: np.ndarray, tasks: Sequence[str],
               n_components: int = 3, top_n: int = 15) -> plt.Figure:
    """Per component: the largest task loadings, and the sorted example loadings."""
    k = min(n_components, u_MxK.shape[1])
    fig, axes = plt.subplots(k, 2, figsize=(10, 2.8 * k), squeeze=False)
    for c in range(k):
        order = np.argsort(u_MxK[:, c])[::-1][:top_n]
        ax = axes[c, 0]
        ax.barh(range(len(order)), u_MxK[order, c][::-1] * s_K[c])
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([str(tasks[i]) for i in order][::-1], fontsize=6)
        ax.set_title(f"component {c + 1}: top tasks (s = {s_K[c]:.3g})", fontsize=9)
        ax = axes[c, 1]
        v = np.sort(v_NxK[:, c])[::-1]
        ax.plot(np.arange(1, v.shape[0] + 1), v)
        ax.set_xscale("log")
        ax.axhline(0.0, color="gray", lw=0.5)
        ax.set_title(f"component {c + 1}: example loadings, sorted", fontsize=9)
        ax.set_xlabel("example rank")
    fig.tight_layout()
    return fig


def similarity(result: dict, samples: dict[str, tuple[np.ndarray, np.ndarray]]) -> plt.Figure:
    """similarity.json's correlations (analysis/similarity.py): top, pooled Pearson and Spearman
    of Z against each measure of this matrix beside the paper's (sentence embeddings, OLMo);
    below, per measure, Z against the similarity over a sample of entries."""
    from forgetting_jax.analysis.similarity import paper_rows

    measures = result["measures"]
    paper = [(f"paper {model}\n{name}", {"pearson": p, "spearman": r}) for model, name, p, r in paper_rows()]
    k = len(samples)
    fig = plt.figure(figsize=(max(8.0, 3.2 * k), 6.5 if k else 3.8))
    grid = fig.add_gridspec(2 if k else 1, max(k, 1), height_ratios=[1.0, 1.1] if k else [1.0])
    ax = fig.add_subplot(grid[0, :])
    labels = [textwrap.fill(name.replace("_", " "), 16) for name in measures] + [label for label, _ in paper]
    values = [(m["pearson"], m["spearman"]) for m in measures.values()] + \
             [(v["pearson"], v["spearman"]) for _, v in paper]
    x = np.arange(len(labels))
    for offset, which, color in ((-0.2, 0, "tab:blue"), (0.2, 1, "tab:orange")):
        heights = [np.nan if v[which] is None else v[which] for v in values]
        bars = ax.bar(x + offset, heights, 0.4, color=color, label=("Pearson", "Spearman")[which])
        for bar in bars[len(measures):]:
            bar.set_alpha(0.45)
            bar.set_hatch("//")
    ax.axhline(0.0, color="gray", lw=0.5)
    if len(measures):
        ax.axvline(len(measures) - 0.5, color="gray", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("correlation with Z")
    ax.set_title("forgetting against similarity: this matrix" + ("" if measures else " (no measure: the file "
                 "holds no embeddings or gradients)") + " | the paper's", fontsize=9)
    ax.legend(fontsize=8)
    for c, (name, (sim, z)) in enumerate(samples.items()):
        ax = fig.add_subplot(grid[1, c])
        ax.scatter(sim, z, s=3, alpha=0.3, lw=0)
        m = measures[name]
        text = ", ".join(f"{key} {m[key]:.3f}" for key in ("pearson", "spearman") if m[key] is not None)
        ax.set_title(f"{name.replace('_', ' ')}\n{text}", fontsize=8)
        ax.set_xlabel("similarity", fontsize=8)
        if c == 0:
            ax.set_ylabel("Z", fontsize=8)
    fig.tight_layout()
    return fig
