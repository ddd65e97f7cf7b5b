"""The report of a forgetting matrix: an experiment's report.md with its analysis figures
(W/experiments/<name>/report.md and analysis/; copied to W/report.md by the pipeline), and the
run summary."""

import json
import os
from typing import Any

import numpy as np

from forgetting_jax.analysis.stats import finite_means, json_safe
from forgetting_jax.matrix.example_texts import snippet
from forgetting_jax.utils.fingerprint import file_fingerprint
from forgetting_jax.utils.io import write_json, write_text
from forgetting_jax.utils.markdown import markdown_table, r2_text


def render_report(name: str, matrix_path: str, analysis: dict, z_MxN: np.ndarray, tasks: list[str],
                  example_ids: list[str], sources: list[str], figures_dir: str, metric: str = "nll",
                  texts: list[str] | None = None) -> str:
    """Markdown that explains the matrix: its size, how much is forgotten, its low-rank structure,
    which tasks cause and which examples suffer the most forgetting. metric: "exact_match" words
    it for a binary matrix of lost answers (matrix/answers.py). texts [N]: the examples' first
    characters (matrix/example_texts.py), shown beside the most forgotten ones.

    Means and shares are over the finite entries of z_MxN [M, N]; when there are non-finite ones
    (NaN, +inf, -inf; counted in analysis["nonfinite"], else here) the summary says how many and
    in which tasks."""
    from forgetting_jax.analysis.nonfinite import NonFinite, count_nonfinite

    m, n = z_MxN.shape
    means = finite_means(z_MxN)  # finite entries only: one +inf would make an np.nanmean inf
    row_mean, col_mean = means.row_mean_M, means.col_mean_N
    with np.errstate(invalid="ignore", divide="ignore"):
        row_forgotten = np.where(means.row_count_M > 0, means.row_positive_M / means.row_count_M, np.nan)
    finite_count = float(means.row_count_M.sum())
    mean_all = float(np.nansum(row_mean * means.row_count_M)) / finite_count if finite_count else float("nan")
    positive_all = means.row_positive_M.sum() / finite_count if finite_count else float("nan")
    nonfinite = (NonFinite.from_dict(analysis["nonfinite"]) if analysis.get("nonfinite")
                 else count_nonfinite(z_MxN, tasks))
    r2 = analysis["r2"]
    svd = r2["svd"]
    if metric == "exact_match":
        meaning = [f"Each entry Z[i, j] of the forgetting matrix is 1 when the base model answered upstream example "
                   f"j right and the model fine-tuned on task i answers it wrong (an answer lost), else 0. "
                   f"This matrix has **{m} tasks x {n} upstream examples** (`{matrix_path}`).", "",
                   f"- {100 * mean_all:.2f}% of entries are lost answers",
                   f"- the task that loses the most answers loses {100 * np.nanmax(row_mean):.1f}% of the "
                   f"{n} examples, the one that loses the fewest {100 * np.nanmin(row_mean):.1f}%"]
    else:
        meaning = [f"Each entry Z[i, j] of the forgetting matrix is how much the mean negative log-likelihood of "
                   f"upstream example j rose after fine-tuning the base model on task i (positive: forgotten). "
                   f"This matrix has **{m} tasks x {n} upstream examples** (`{matrix_path}`).", "",
                   f"- mean forgetting {mean_all:+.4f} nats per token; {100 * positive_all:.1f}% of entries "
                   f"are positive (forgotten)",
                   f"- the most forgetting-inducing task raises NLL by {np.nanmax(row_mean):+.4f} on average, "
                   f"the least by {np.nanmin(row_mean):+.4f}"]
    over_finite = [f"- {nonfinite.describe('the matrix')}; the means and percentages in this report are over "
                   f"the {int(finite_count):,} finite entries"] if nonfinite.any else []
    parts = [f"# Forgetting report: {name}", ""] + meaning + over_finite + [
        "",
        "## Low-rank structure",
        "",
        "How much of the matrix a simple model explains (R^2 over the observed entries). The paper finds "
        "forgetting close to low rank: a few task and example factors explain most of it.",
        "",
        markdown_table(["model", "R^2"], [[label, r2_text(r2[key])] for key, label in (
                                      ("item_only", "item only (each example's mean over tasks)"),
                                      ("task_only", "task only (each task's mean over examples)")) if key in r2]
               + [["additive (mu + b_task + b_example)", r2_text(r2["additive"])],
                                  ["multiplicative rank 1 (alpha_i beta_j)", r2_text(r2["multiplicative"])]]
               + [[f"rank-{k} SVD", r2_text(v)] for k, v in list(svd.items())[:5]]),
        "",
        f"![R^2 by rank]({os.path.join(figures_dir, 'r2_by_rank.png')})",
        "",
        "## The matrix",
        "",
        "Rows (tasks) and columns (upstream examples) ordered by their means: forgetting concentrates on "
        "some tasks and some examples.",
        "",
        f"![heatmap]({os.path.join(figures_dir, 'heatmap.png')})",
        "",
        "## Tasks that cause the most forgetting",
        "",
        markdown_table(["task", "mean Z", "forgotten"],
               [[tasks[i], f"{row_mean[i]:+.4f}", f"{100 * row_forgotten[i]:.0f}%"]
                for i in np.argsort(-row_mean)[:8]]),
        "",
        "## Upstream examples forgotten the most",
        "",
        markdown_table(["example", "source", "text", "mean Z"],
               [[example_ids[j], sources[j] if sources else "", snippet(texts[j]) if texts is not None else "",
                 f"{col_mean[j]:+.4f}"] for j in np.argsort(-col_mean)[:10]]),
    ]
    enrichment = analysis.get("enrichment", {}).get("mean_forgetting")
    if enrichment:
        parts += ["", "## Sources among the most forgotten examples", "",
                  f"Chi-square test of the sources of the top {100 * analysis['settings']['top_fraction']:.0f}% "
                  f"most forgotten examples against all examples: chi2 = {enrichment.get('chi2', float('nan')):.1f}, "
                  f"p = {enrichment.get('p_value', float('nan')):.2g}."]
    parts += similarity_section(analysis.get("similarity"), figures_dir)
    parts += ["", "## Components", "", "The leading singular vectors: which tasks and examples load on each.", "",
              f"![components]({os.path.join(figures_dir, 'components.png')})", ""]
    return "\n".join(parts)


def similarity_section(similarity: dict | None, figures_dir: str) -> list[str]:
    """"Similarity and forgetting": the pooled correlations of Z with each similarity measure
    (fits.json "similarity", analysis/similarity.py) beside the paper's; nothing without one."""
    if not similarity:
        return []
    from forgetting_jax.analysis.similarity import paper_rows

    def corr(x):
        return "n/a" if x is None else f"{x:+.3f}"

    rows = [[name.replace("_", " "), corr(m["pearson"]), corr(m["spearman"]), f"{m['count']:,}"]
            for name, m in similarity.items()]
    paper = "; ".join(f"{model} with {name} embeddings {p:.3f} / {r:.3f}" for model, name, p, r in paper_rows())
    return ["", "## Similarity and forgetting", "",
            "Does forgetting follow how similar a task is to an upstream example? Pearson and Spearman of Z against "
            "each similarity over the finite entries (pooled; per task in `similarity.json`). The paper finds "
            f"weak correlations with sentence-embedding cosines (Pearson / Spearman: {paper}): there, similarity "
            "explains little of the matrix, its low-rank structure much more.", "",
            markdown_table(["similarity", "Pearson", "Spearman", "entries"], rows), "",
            f"![similarity]({os.path.join(figures_dir, 'similarity.png')})"]


def write_report(directory: str, matrix_path: str, name: str, max_rank: int, workdir: str | None = None,
                 predict: Any = None, encoder: Any = None) -> tuple[str, dict]:
    """Runs the analysis of the matrix into directory/analysis and writes directory/report.md
    (an experiment's directory); returns (the report's path, the analysis). name: the experiment's;
    max_rank: of the truncated SVD fits (matrix.max_rank). The report names the matrix by its path
    relative to `workdir` (default: `directory`). predict: config.predict; with predict.report the
    report gets its "Predicting forgetting" section (matrix/prediction_report.py) and the analysis
    a "prediction" entry (the best methods and the headline). encoder(tasks, example_ids): the
    inputs of a trainable rep_dot encoder (matrix/prediction_report.py `comparison_settings`).

    Reused as they are when the matrix file and the analysis settings are those they were made from.
    """
    from forgetting_jax.analysis.matrix_file import read_matrix_file
    from forgetting_jax.analysis.analyze import analyze_matrix
    from forgetting_jax.matrix.prediction_report import prediction_section, settings_stamp

    analysis_dir = os.path.join(directory, "analysis")
    path = os.path.join(directory, "report.md")
    stamp_path = os.path.join(analysis_dir, "fingerprint.json")
    stamp = {"matrix": file_fingerprint(matrix_path), "max_rank": int(max_rank), "name": name,
             "predict": settings_stamp(predict)}
    if os.path.isfile(path) and os.path.isfile(stamp_path):
        with open(stamp_path, encoding="utf-8") as f:
            if json.load(f) == stamp:
                with open(os.path.join(analysis_dir, "fits.json"), encoding="utf-8") as g:
                    return path, json.load(g)
    analysis = analyze_matrix(matrix_path, analysis_dir, max_rank=int(max_rank))
    data = read_matrix_file(matrix_path)
    ids = data["example_ids"]
    text = render_report(name, os.path.relpath(matrix_path, workdir or directory), analysis, data["Z"],
                         data["tasks"], ids, data.get("example_sources", [""] * len(ids)), "analysis",
                         metric=data["metric"], texts=data.get("example_texts"))
    if data["metric"] == "exact_match":
        from forgetting_jax.matrix.answers_report import answers_section

        text = text.rstrip("\n") + "\n\n" + answers_section(data, analysis_dir, "analysis")
    if settings_stamp(predict) is not None:
        section, result = prediction_section(data, predict, analysis_dir, "analysis", encoder)
        text = text.rstrip("\n") + "\n\n" + section
        if result is not None:
            analysis["prediction"] = {"best": result["best"], "headline": result["headline"],
                                      "pooled": {k: v["pooled"] for k, v in result["methods"].items()}}
            write_json(os.path.join(analysis_dir, "fits.json"), json_safe(analysis))
    write_text(path, text)
    write_json(stamp_path, stamp)
    return path, analysis


def print_summary(summary) -> None:
    """What the user is looking at and where the files are."""
    kept = getattr(summary, "num_columns", None)
    columns = (f"{summary.num_examples}" if kept is None else
               f"{kept} of {summary.num_examples} (matrix.em_columns={summary.em_columns})")
    lines = [
        "",
        f"forgetting matrix: {len(summary.tasks)} tasks x {columns} upstream examples "
        f"({len(summary.trained)} rows computed now, {len(summary.reused_rows)} reused, base scores "
        f"{'reused' if summary.base_scores_reused else 'computed'}) in {summary.seconds:.0f}s",
        f"  matrix   {summary.matrix_path}   " + ("(Z[i, j] = 1: example j answered right before, wrong after "
                                                 "fine-tuning on task i)" if summary.metric == "exact_match" else
                                                 "(Z[i, j] = NLL after fine-tuning on task i - NLL before, "
                                                 "example j; > 0 = forgotten)"),
    ]
    if getattr(summary, "diverged", None):
        lines.append(f"  diverged {', '.join(summary.diverged)}: left out of the matrix (matrix.on_divergence=skip; "
                     "lower the learning rate and rerun to add them)")
    if summary.analysis:
        r2 = summary.analysis["r2"]
        svd = list(r2["svd"].values())
        lines.append(f"  low rank R^2: additive {r2_text(r2['additive'])}, "
                     f"multiplicative {r2_text(r2['multiplicative'])}, "
                     f"rank 1-3 SVD {', '.join(r2_text(v) for v in svd[:3])}")
    prediction = (summary.analysis or {}).get("prediction")
    if prediction and prediction["best"]["rmse"]:
        best = prediction["best"]["rmse"]
        pooled = prediction["pooled"]
        others = ", ".join(f"{k} {v['rmse']:.4f}" for k, v in pooled.items() if k != best)
        lines.append(f"  predicting forgetting of held-out tasks: {best} wins (pooled RMSE {pooled[best]['rmse']:.4f}; "
                     f"{others})")
    if summary.report_path:
        lines.append(f"  report   {summary.report_path}   (figures in {os.path.dirname(summary.report_path)}/analysis; "
                     "report.html beside it: the interactive page)")
    lines.append(f"  latest   {os.path.join(summary.workdir, 'matrix', 'forgetting.npz')}"
                 + (f", {os.path.join(summary.workdir, 'report.md')}" if summary.report_path else "")
                 + "   (copies of this run's, replaced by the next run of any experiment)")
    lines.append("  next     forgetting-jax predict --matrix=" + summary.matrix_path +
                 " --test_fraction=0.3 --k=30 --seeds=10 --output=prediction.json")
    print("\n".join(lines), flush=True)
