"""The "Answers lost" section of the report of an exact-match matrix (matrix/answers.py): accuracy
before and after each fine-tuning run, per-task and per-example drop rates, and the low-rank
structure of the binary drop matrix against a null that keeps every task's drop count.

Drop rates are over the examples the base model answered right (only those can be dropped). A
matrix of only those columns (matrix.em_columns = base_correct, the default) says nothing of the
other upstream examples: its accuracy after fine-tuning is over the base's right answers, and
answers gained are not counted.
"""

import os
from typing import Any

import numpy as np

from forgetting_jax.utils.io import atomic_path, write_json
from forgetting_jax.utils.markdown import markdown_table

RANKS = (1, 2, 3, 5)
NULL_DRAWS = 5


def svd_r2(x_MxN: np.ndarray, ranks=RANKS) -> dict[int, float]:
    """R^2 of the rank-k truncated SVD of x per k, as the report's low-rank table computes it
    (analysis/fits.py truncated_svd: about the mean; NaN beyond min(M, N) or for a constant x)."""
    from forgetting_jax.analysis.chunks import ColumnChunks
    from forgetting_jax.analysis.fits import truncated_svd

    x = np.asarray(x_MxN, np.float32)
    if x.size == 0 or not np.ptp(x) > 0:
        return {k: float("nan") for k in ranks}
    r2_K = truncated_svd(ColumnChunks(x), max(ranks)).r2_K
    return {k: float(r2_K[k - 1]) if k <= len(r2_K) else float("nan") for k in ranks}


def row_shuffled(x_MxN: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row's entries permuted independently: each task keeps its drop count, and which
    examples drop together across tasks becomes chance."""
    return np.stack([rng.permutation(row) for row in x_MxN]) if len(x_MxN) else x_MxN


def answer_statistics(data: dict[str, Any]) -> dict[str, Any]:
    """The section's numbers from the matrix file's arrays (analysis.matrix_file.read_matrix_file)."""
    before_N, after_MxN = data["correct_before"], data["correct_after"]
    drop_MxN = data["drop"].astype(bool)
    tasks, ids = data["tasks"], data["example_ids"]
    subset = data.get("upstream_size", len(before_N)) != len(before_N)
    upstream = int(data.get("upstream_size", len(before_N)))
    right = int(before_N.sum())
    drops_M = drop_MxN.sum(axis=1)
    gains_M = (~before_N[None, :] & after_MxN).sum(axis=1)
    per_example = drop_MxN[:, before_N].mean(axis=0) if right else np.zeros(0)
    d_right = drop_MxN[:, before_N].astype(np.float64)
    rng = np.random.default_rng(0)
    observed = svd_r2(d_right) if right else {}
    null = ({k: float(np.mean([svd_r2(row_shuffled(d_right, rng))[k] for _ in range(NULL_DRAWS)]))
             for k in RANKS} if right else {})
    right_ids = [ids[j] for j in np.flatnonzero(before_N)]
    order = np.argsort(-per_example, kind="stable")
    return {
        "examples": upstream, "columns": len(before_N), "em_columns": data.get("em_columns", "all"),
        "tasks": len(tasks), "base_right": right, "base_accuracy": right / max(upstream, 1),
        "per_task": [{"task": t, "accuracy": float(after_MxN[i].mean()), "drops": int(drops_M[i]),
                      "drop_rate": int(drops_M[i]) / max(right, 1), "gains": None if subset else int(gains_M[i])}
                     for i, t in enumerate(tasks)],
        "drop_rate": float(drop_MxN.sum()) / max(right * len(tasks), 1),
        "examples_never_dropped": int((per_example == 0).sum()),
        "examples_dropped_by_all": int((per_example == 1).sum()),
        "per_example_drop_rate_quartiles": ([float(q) for q in np.quantile(per_example, [0.25, 0.5, 0.75])]
                                            if right else []),
        "most_dropped": [{"example": right_ids[j], "drop_rate": float(per_example[j])} for j in order[:10]],
        "svd_r2": {str(k): v for k, v in observed.items()},
        "svd_r2_row_shuffled": {str(k): v for k, v in null.items()},
        "per_example_drop_rates": per_example.tolist(),
    }


def answers_section(data: dict[str, Any], analysis_dir: str, figures_dir: str) -> str:
    """Markdown of the section; writes analysis_dir/answers.json and answers.png (drop rates)."""
    stats = answer_statistics(data)
    saved = {k: v for k, v in stats.items() if k != "per_example_drop_rates"}
    write_json(os.path.join(analysis_dir, "answers.json"), saved)
    _figure(stats, os.path.join(analysis_dir, "answers.png"))
    m, right = stats["tasks"], stats["base_right"]
    subset = stats["columns"] != stats["examples"]
    columns = (f"The matrix's columns are those {stats['columns']:,} examples only (matrix.em_columns="
               f"{stats['em_columns']}, as the paper's final code builds it). " if subset else "")
    parts = [
        "## Answers lost (exact match)",
        "",
        f"Each model answered the {stats['examples']:,} upstream prompts by greedy decoding. The base model "
        f"answers **{right:,} ({100 * stats['base_accuracy']:.1f}%)** right. {columns}An entry D[i, j] = 1 when "
        f"example j was right before and is wrong after fine-tuning on task i. Over the {m} tasks, "
        f"**{100 * stats['drop_rate']:.1f}%** of the right answers are lost.",
        "",
    ]
    if not right:
        return "\n".join(parts + ["The base model answers no upstream example right: nothing can be lost.", ""])
    q = stats["per_example_drop_rate_quartiles"]
    by_rate = sorted(stats["per_task"], key=lambda r: -r["drop_rate"])
    if subset:
        table = markdown_table(["task", "answers lost", "drop rate"],
                               [[r["task"], r["drops"], f"{100 * r['drop_rate']:.1f}%"] for r in by_rate])
    else:
        table = markdown_table(["task", "accuracy after", "answers lost", "drop rate", "answers gained"],
                               [[r["task"], f"{100 * r['accuracy']:.1f}%", r["drops"], f"{100 * r['drop_rate']:.1f}%",
                                 r["gains"]] for r in by_rate])
    parts += [
        table,
        "",
        f"Per example (over the {right:,} right before): {stats['examples_never_dropped']:,} are never lost, "
        f"{stats['examples_dropped_by_all']:,} are lost by every task; quartiles of the share of tasks that "
        f"lose an example: {q[0]:.2f}, {q[1]:.2f}, {q[2]:.2f}.",
        "",
        f"![drop rates]({os.path.join(figures_dir, 'answers.png')})",
        "",
        markdown_table(["example", "share of tasks that lose it"],
                       [[r["example"], f"{r['drop_rate']:.2f}"] for r in stats["most_dropped"]]),
        "",
        "Low-rank structure of the binary matrix (the columns answered right before): the R^2 of a rank-k "
        "SVD (the R^2 of the low-rank table), against the same matrix with each task's entries shuffled among "
        "the examples (each task keeps its number of lost answers; which examples are lost together becomes "
        f"chance; mean of {NULL_DRAWS} draws).",
        "",
        markdown_table(["rank", "drop matrix", "row-shuffled"],
                       [[k, f"{stats['svd_r2'][str(k)]:.3f}", f"{stats['svd_r2_row_shuffled'][str(k)]:.3f}"]
                        for k in RANKS]),
        "",
    ]
    return "\n".join(parts)


def _figure(stats: dict, path: str) -> None:
    from forgetting_jax.analysis.figures import plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = sorted(stats["per_task"], key=lambda r: -r["drop_rate"])
    left.barh([r["task"] for r in rows][::-1], [r["drop_rate"] for r in rows][::-1], color="tab:red")
    left.set_xlabel("share of the base model's right answers lost")
    left.set_title("per task")
    rates = stats["per_example_drop_rates"]
    right.hist(rates, bins=min(20, max(stats["tasks"], 1)) if rates else 1, color="tab:blue")
    right.set_xlabel("share of tasks that lose the example")
    right.set_ylabel("examples")
    right.set_title("per example (right before)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
