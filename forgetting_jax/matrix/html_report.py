"""report.html: the experiment's matrix as one self-contained page that opens offline (plotly, its
JavaScript inlined once), beside report.md in W/experiments/<name>/ and copied to W/report.html.

  - the forgetting matrix as a zoomable heatmap, rows and columns ordered by the additive fit's
    task and example effects (row and column means of Z); hovering a cell shows the task, the
    example's id, source and first characters, and Z. Above MAX_COLUMNS columns the ordered
    columns are averaged in MAX_COLUMNS equal bins (a cell then names its bin's most forgotten
    example and how many it averages), so the page stays light at 100 x 100,000;
  - the low-rank fits (item-only, task-only, additive, multiplicative, rank-k R^2);
  - the prediction comparison (pooled RMSE and F1 per method) when the report has it;
  - the replay experiment's strategies (mean held-out forgetting, confidence interval) when run;
  - for a matrix of lost answers, the answers lost per task;
  - the most forgotten upstream examples with their text, overall and per task, and the tasks
    that forget most.

Process 0 writes; the write is atomic (temp + rename).
"""

import html
import json
import os
import warnings
from typing import Any

import numpy as np

from forgetting_jax.utils.io import copy_file, write_text
from forgetting_jax.utils.runtime import is_main

MAX_COLUMNS = 2000  # heatmap columns shown (bins beyond)
MAX_ROWS = 500
TOP_EXAMPLES = 20
TOP_PER_TASK = 5


def _table(header: list[str], rows: list[list[Any]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _label(ids, sources, texts, j: int, chars: int = 80) -> str:
    text = " ".join(str(texts[j]).split())[:chars] if texts is not None else ""
    source = f" [{sources[j]}]" if sources is not None and str(sources[j]) else ""
    return f"{ids[j]}{source}: {text}"


def heatmap_data(z_MxN: np.ndarray, tasks, ids, sources, texts, max_columns: int = MAX_COLUMNS,
                 max_rows: int = MAX_ROWS) -> dict:
    """What the heatmap shows: rows and columns ordered by mean Z (most forgetting first), columns
    binned above `max_columns`: {"z" [R, C], "rows" [R] task names, "columns" [C] hover labels,
    "binned": examples per bin or 1}."""
    z = np.asarray(z_MxN, np.float64)
    with warnings.catch_warnings():  # all-NaN rows or columns: NaN means
        warnings.simplefilter("ignore", RuntimeWarning)
        row_mean, col_mean = np.nanmean(z, 1), np.nanmean(z, 0)
    row_order = np.argsort(-np.nan_to_num(row_mean, nan=-np.inf), kind="stable")[:max_rows]
    col_order = np.argsort(-np.nan_to_num(col_mean, nan=-np.inf), kind="stable")
    z = z[row_order][:, col_order]
    n = z.shape[1]
    if n <= max_columns:
        labels = [_label(ids, sources, texts, j) for j in col_order]
        return {"z": z, "rows": [str(tasks[i]) for i in row_order], "columns": labels, "binned": 1}
    edges = np.linspace(0, n, max_columns + 1).astype(int)
    with warnings.catch_warnings():  # all-NaN rows or columns: NaN means
        warnings.simplefilter("ignore", RuntimeWarning)
        binned = np.stack([np.nanmean(z[:, a:b], 1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    labels = [f"{b - a} examples, e.g. " + _label(ids, sources, texts, col_order[a])
              for a, b in zip(edges[:-1], edges[1:])]
    return {"z": binned, "rows": [str(tasks[i]) for i in row_order], "columns": labels,
            "binned": int(np.ceil(n / max_columns))}


def _figures(data: dict, analysis: dict) -> list[str]:
    import plotly.graph_objects as go
    import plotly.io as pio

    ids, sources, texts = data["example_ids"], data.get("example_sources"), data.get("example_texts")
    shown = heatmap_data(data["Z"], data["tasks"], ids, sources, texts)
    z = np.where(np.isfinite(shown["z"]), shown["z"], np.nan)
    limit = float(np.nanquantile(np.abs(z), 0.99)) if np.isfinite(z).any() else 1.0
    limit = limit if limit > 0 else 1.0  # a matrix of zeros (no answer lost): a colour scale all the same
    heat = go.Figure(go.Heatmap(
        z=np.round(z, 4).tolist(), x=shown["columns"], y=shown["rows"], colorscale="RdBu", reversescale=True,
        zmid=0.0, zmin=-limit, zmax=limit, colorbar={"title": {"text": "Z"}},
        hovertemplate="task %{y}<br>%{x}<br>Z %{z:.4f}<extra></extra>"))
    title = "Forgetting matrix Z (rows: tasks, columns: upstream examples; most forgetting first)"
    if shown["binned"] > 1:
        title += f"; columns averaged in bins of about {shown['binned']}"
    heat.update_layout(title=title, height=max(400, 18 * len(shown["rows"]) + 160),
                       xaxis={"showticklabels": False, "type": "category",
                              "title": "upstream examples, by mean forgetting"},
                       yaxis={"autorange": "reversed", "type": "category"},
                       margin={"l": 160, "r": 40, "t": 60, "b": 40})
    r2 = analysis.get("r2", {})
    names = [("item_only", "item only"), ("task_only", "task only"), ("additive", "additive"),
             ("multiplicative", "multiplicative")]
    bars_x = [label for key, label in names if r2.get(key) is not None]
    bars_y = [float(r2[key]) for key, _ in names if r2.get(key) is not None]
    for k, value in sorted((r2.get("svd") or {}).items(), key=lambda kv: int(kv[0])):
        if value is not None:  # undefined for a constant matrix
            bars_x.append(f"rank {k}")
            bars_y.append(float(value))
    fits = go.Figure(go.Bar(x=bars_x, y=bars_y, hovertemplate="%{x}: R^2 %{y:.3f}<extra></extra>"))
    fits.update_layout(title="Low-rank fits of Z (R^2)", yaxis={"range": [0, 1]}, height=380)
    out = [pio.to_html(heat, include_plotlyjs=True, full_html=False, div_id="heatmap"),
           pio.to_html(fits, include_plotlyjs=False, full_html=False, div_id="fits")]
    return out


def _example_tables(data: dict) -> list[str]:
    z = np.asarray(data["Z"], np.float64)
    ids, sources, texts = data["example_ids"], data.get("example_sources"), data.get("example_texts")
    tasks = list(data["tasks"])

    def text(j):
        return " ".join(str(texts[j]).split()) if texts is not None else ""

    def source(j):
        return str(sources[j]) if sources is not None else ""

    with warnings.catch_warnings():  # all-NaN rows or columns: NaN means
        warnings.simplefilter("ignore", RuntimeWarning)
        col_mean, row_mean = np.nanmean(z, 0), np.nanmean(z, 1)
        row_positive = np.nanmean(np.where(np.isfinite(z), z > 0, np.nan), 1)
    top = np.argsort(-np.nan_to_num(col_mean, nan=-np.inf), kind="stable")[:TOP_EXAMPLES]
    parts = ["<h2>Upstream examples forgotten the most</h2>",
             _table(["rank", "example", "source", "text", "mean Z"],
                    [[r + 1, ids[j], source(j), text(j), f"{col_mean[j]:+.4f}"] for r, j in enumerate(top)],
                    "examples")]
    order = np.argsort(-np.nan_to_num(row_mean, nan=-np.inf), kind="stable")
    parts += ["<h2>Tasks that forget the most</h2>",
              _table(["task", "mean Z", "forgotten (Z > 0)"],
                     [[tasks[i], f"{row_mean[i]:+.4f}", f"{100 * row_positive[i]:.0f}%"] for i in order[:20]],
                     "tasks")]
    rows = []
    for i in order:
        for j in np.argsort(-np.nan_to_num(z[i], nan=-np.inf), kind="stable")[:TOP_PER_TASK]:
            rows.append([tasks[i], ids[j], source(j), text(j), f"{z[i, j]:+.4f}"])
    parts += ["<h2>Most forgotten examples per task</h2>",
              _table(["task", "example", "source", "text", "Z"], rows, "per-task")]
    return parts


def _studies(analysis: dict, replay: dict | None, data: dict) -> list[str]:
    parts = []
    prediction = analysis.get("prediction")
    if prediction:
        pooled = prediction.get("pooled", {})
        parts += ["<h2>Predicting forgetting of held-out tasks</h2>",
                  f"<p>Best by pooled RMSE: {html.escape(str(prediction['best'].get('rmse')))}; by pooled F1: "
                  f"{html.escape(str(prediction['best'].get('f1')))}.</p>",
                  _table(["method", "pooled RMSE", "pooled F1"],
                         [[m, _num(v.get("rmse")), _num(v.get("f1"))] for m, v in pooled.items()], "prediction")]
    if replay:
        summary = replay.get("summary", {})
        parts += ["<h2>Replay: preventing forgetting</h2>",
                  f"<p>Protocol {html.escape(str(replay.get('settings', {}).get('protocol', '')))}; mean forgetting "
                  "of the held-out upstream examples over the test tasks.</p>",
                  _table(["strategy", "tasks", "mean forgetting", "CI low", "CI high"],
                         [[s, v.get("n"), _num(v.get("mean")), _num(v.get("ci_low")), _num(v.get("ci_high"))]
                          for s, v in summary.items()], "replay")]
    if data.get("metric") == "exact_match" and "drop" in data:
        drop = np.asarray(data["drop"], np.float64)
        parts += ["<h2>Answers lost</h2>",
                  _table(["task", "answers lost", "share"],
                         [[t, int(np.nansum(drop[i])), f"{100 * np.nanmean(drop[i]):.1f}%"]
                          for i, t in enumerate(data["tasks"])], "answers")]
    return parts


def _num(value) -> str:
    return "n/a" if value is None or not np.isfinite(float(value)) else f"{float(value):.4f}"


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;
text-align:left;vertical-align:top}th{background:#f3f3f3}td:nth-child(4){max-width:560px}"""


def render_html(name: str, data: dict, analysis: dict, replay: dict | None = None) -> str:
    """The page of one experiment (see the module docstring)."""
    m, n = np.asarray(data["Z"]).shape
    parts = [f"<h1>Forgetting report: {html.escape(name)}</h1>",
             f"<p>{m} tasks x {n} upstream examples. Z[i, j] = the NLL of upstream example j after fine-tuning "
             "on task i minus before (positive: forgotten).</p>" if data.get("metric", "nll") == "nll" else
             f"<p>{m} tasks x {n} upstream examples. Z[i, j] = 1 when the base answered example j right and the "
             "model fine-tuned on task i answers it wrong.</p>"]
    parts += _figures(data, analysis)
    parts += _studies(analysis, replay, data)
    parts += _example_tables(data)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Forgetting report: '
            f"{html.escape(name)}</title><style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def write_html_report(experiment_dir: str, matrix_path: str, name: str, workdir: str | None = None) -> str:
    """Writes experiment_dir/report.html from the matrix file, experiment_dir/analysis/fits.json
    and, when present, experiment_dir/replay/results.json; copies it to workdir/report.html.
    Returns its path."""
    from forgetting_jax.analysis.matrix_file import read_matrix_file

    path = os.path.join(experiment_dir, "report.html")
    if not is_main():
        return path
    data = read_matrix_file(matrix_path)
    with open(os.path.join(experiment_dir, "analysis", "fits.json"), encoding="utf-8") as f:
        analysis = json.load(f)
    replay = None
    results = os.path.join(experiment_dir, "replay", "results.json")
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as f:
            replay = json.load(f)
    write_text(path, render_html(name, data, analysis, replay))
    if workdir is not None:
        copy_file(path, os.path.join(workdir, "report.html"))
    return path
