"""`forgetting-jax forecast` against the true row, on tasks fine-tuned outside the matrix.

  python benchmarks/forecast_heldout.py --matrix=W/experiments/demo/forgetting.npz --workdir=W \
      --tasks=definition_family,divide,element_symbol,palindrome,time_24h,to_hex --output=DIR

Every task must be fine-tuned and exported in W (`forgetting-jax finetune --task=T`) and must not
be a row of the matrix. Per task, its true row is scored in full under its checkpoint with the
forecast's scorer (forecast/forecast.py; warm: after one scoring pass that compiles), and then,
for every k, selection (uniform, variance, leverage, spread) and seed, the forecast's k scored
columns are taken from the true row and the row is completed as `forecast` completes it (method
auto: the lowest pooled RMSE of the protocol on the matrix at that k; and each completion method
and the training rows' mean row, train_mean, for reference). Metrics on the unscored columns:
Spearman, precision@100 (the share of the 100 predicted most forgotten that are among the 100
truly most forgotten), RMSE. Wall time: scoring all N against scoring k (both warm), and one
end-to-end `forecast` call per task (k = 30, uniform, no verify: loading, choosing, scoring,
completing). With --task_data_demo, also the forecast before fine-tuning (`forecast --task_data`:
the task's demo training data, rep_sim and train_mean, k = 0). Writes DIR/runs.jsonl (one line per
task, k, selection, seed, method), DIR/table.md
and DIR/run.json (settings, per-task timings).
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scipy import stats  # noqa: E402

from forgetting_jax.analysis.matrix_file import read_matrix_file  # noqa: E402
from forgetting_jax.forecast import forecast as forecast_lib  # noqa: E402
from forgetting_jax.forecast.checkpoint import resolve_checkpoint  # noqa: E402
from forgetting_jax.models.loading import load_tokenizer  # noqa: E402
from forgetting_jax.predict.methods import CompletionConfig  # noqa: E402
from forgetting_jax.replay.strategies import Completer  # noqa: E402
from forgetting_jax.utils.io import write_json, write_text  # noqa: E402

METHODS = ("additive", "multiplicative", "als", "knn", "train_mean")


def metrics(predicted_N, true_N, scored):
    """Spearman, precision@100 and RMSE on the finite unscored columns."""
    keep = np.isfinite(true_N) & np.isfinite(predicted_N)
    keep[scored] = False
    p, t = predicted_N[keep], true_N[keep]
    top = min(100, p.size // 2)
    top_p, top_t = np.argsort(-p, kind="stable")[:top], np.argsort(-t, kind="stable")[:top]
    return {"spearman": float(stats.spearmanr(p, t).statistic),
            "precision_at_100": len(set(top_p.tolist()) & set(top_t.tolist())) / top,
            "rmse": float(np.sqrt(np.mean((p - t) ** 2))), "entries": int(p.size)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", required=True)
    parser.add_argument("--workdir", required=True, help="the workspace whose tasks/<task>/ hold the checkpoints")
    parser.add_argument("--tasks", required=True, help="comma list of tasks fine-tuned outside the matrix")
    parser.add_argument("--k", default="10,30,100")
    parser.add_argument("--select", default=",".join(forecast_lib.SELECTIONS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", required=True)
    parser.add_argument("--task_data_demo", action="store_true",
                        help="also forecast each task before fine-tuning from its demo training data")
    args = parser.parse_args()
    os.makedirs(args.output, exist_ok=True)
    tasks, ks = args.tasks.split(","), [int(k) for k in args.k.split(",")]
    selections = args.select.split(",")

    data = read_matrix_file(args.matrix)
    inside = [t for t in tasks if t in data["tasks"]]
    if inside:
        raise SystemExit(f"{', '.join(inside)}: rows of the matrix; choose tasks fine-tuned outside it")
    z = data["Z"]
    valid = np.isfinite(np.asarray(data["base_nll"])) & np.isfinite(z).any(axis=0)
    columns_all = np.flatnonzero(valid)
    auto = {k: forecast_lib.auto_method(data, k, 3) for k in ks}
    completer = Completer(z, CompletionConfig(seed=0), 0)
    runs, timings = [], {}
    for task in tasks:
        checkpoint = resolve_checkpoint(os.path.join(args.workdir, "tasks", task), data.get("base_fingerprint"))
        tokenizer = load_tokenizer(checkpoint.model_dir)
        scorer = forecast_lib._Scorer(data, args.matrix, checkpoint.model_dir, tokenizer,
                                      forecast_lib.ForecastSettings())
        scorer.forgetting(columns_all[:30])  # compiles
        t0 = time.perf_counter()
        true_part = scorer.forgetting(columns_all)
        all_seconds = time.perf_counter() - t0
        true_N = np.full(z.shape[1], np.nan)
        true_N[columns_all] = true_part
        t0 = time.perf_counter()
        scorer.forgetting(columns_all[-30:])
        k30_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        end_to_end = forecast_lib.forecast(args.matrix, os.path.join(args.workdir, "tasks", task),
                                            forecast_lib.ForecastSettings(k=30))
        timings[task] = {"score_all_seconds": all_seconds, "score_30_seconds": k30_seconds,
                         "forecast_k30_seconds": time.perf_counter() - t0, "columns": int(columns_all.size),
                         "forecast_k30_method": end_to_end.summary["method"],
                         "forecast_k30": metrics(end_to_end.predicted_N, true_N, end_to_end.summary["scored_columns"])}
        print(f"{task}: all {columns_all.size} scored in {all_seconds:.1f}s, 30 in {k30_seconds:.2f}s; forecast "
              f"(k = 30) end to end {timings[task]['forecast_k30_seconds']:.1f}s", flush=True)
        if args.task_data_demo:
            runs += before_fine_tuning(args.matrix, task, true_N, args.output)
        for k in ks:
            for select in selections:
                for seed in range(args.seeds if select in ("uniform", "spread") else 1):
                    cols = forecast_lib.choose_columns(z, valid, k, select, seed)
                    observed = true_N[cols]
                    for method in dict.fromkeys((auto[k][0], *METHODS)):
                        predicted = completer.complete(method, cols[None], observed[None], [task])[0]
                        predicted[cols] = observed
                        runs.append({"task": task, "k": k, "select": select, "seed": seed, "method": method,
                                     "auto": method == auto[k][0], **metrics(predicted, true_N, cols)})
    write_text(os.path.join(args.output, "runs.jsonl"), "".join(json.dumps(r) + "\n" for r in runs))
    table = summarize(runs, ks, selections, tasks, timings, auto)
    write_text(os.path.join(args.output, "table.md"), table)
    write_json(os.path.join(args.output, "run.json"), {
        "matrix": args.matrix, "tasks": tasks, "k": ks, "select": selections, "seeds": args.seeds,
        "matrix_shape": list(z.shape), "auto": {k: v[0] for k, v in auto.items()}, "timings": timings,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"})
    print(table)


def before_fine_tuning(matrix, task, true_N, output):
    """The forecasts of `forecast --task_data` (the task's demo training data) by rep_sim and
    train_mean, against the true row."""
    from forgetting_jax.data.demo.tasks import suite_records
    from forgetting_jax.forecast.before import forecast_before

    path = os.path.join(output, f"{task}.train.jsonl")
    write_text(path, "".join(json.dumps(r) + "\n" for r in suite_records([task], "train")))
    out = []
    for method in ("rep_sim", "train_mean"):
        result = forecast_before(matrix, path, forecast_lib.ForecastSettings(method=method))
        out.append({"task": task, "k": 0, "select": "task_data", "seed": 0, "method": method, "auto": False,
                    **metrics(result.predicted_N, true_N, []), "seconds": result.summary["seconds"]})
    os.remove(path)
    return out


def summarize(runs, ks, selections, tasks, timings, auto):
    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    lines = [f"Tasks: {', '.join(tasks)}; the mean over tasks (and seeds) of Spearman / precision@100 / RMSE on "
             "the unscored columns.", "", "| k | selection | auto (method) | train_mean | " +
             " | ".join(m for m in METHODS if m != "train_mean") + " |", "| ---: | --- | --- | --- |" +
             " --- |" * (len(METHODS) - 1)]
    for k in ks:
        for select in selections:
            cell = {}
            for method in METHODS:
                rows = [r for r in runs if r["k"] == k and r["select"] == select and r["method"] == method]
                cell[method] = f"{mean(rows, 'spearman'):.3f} / {mean(rows, 'precision_at_100'):.2f} / " \
                               f"{mean(rows, 'rmse'):.4f}"
            lines.append(f"| {k} | {select} | {cell[auto[k][0]]} ({auto[k][0]}) | {cell['train_mean']} | " +
                         " | ".join(cell[m] for m in METHODS if m != "train_mean") + " |")
    before = [r for r in runs if r["k"] == 0]
    if before:
        lines += ["", "Before fine-tuning (`forecast --task_data`, no example scored): Spearman / precision@100 / "
                  "RMSE", "", "| method | mean over tasks | " + " | ".join(tasks) + " |",
                  "| --- | --- |" + " --- |" * len(tasks)]
        for method in ("rep_sim", "train_mean"):
            rows = [r for r in before if r["method"] == method]
            cells = [f"{r['spearman']:.3f} / {r['precision_at_100']:.2f} / {r['rmse']:.4f}" for r in rows]
            lines.append(f"| {method} | {mean(rows, 'spearman'):.3f} / {mean(rows, 'precision_at_100'):.2f} / "
                         f"{mean(rows, 'rmse'):.4f} | " + " | ".join(cells) + " |")
    lines += ["", "| task | N | score all N (s) | score 30 (s) | forecast k = 30 end to end (s) | its method | "
              "its Spearman / precision@100 / RMSE |", "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for task, t in timings.items():
        m = t["forecast_k30"]
        lines.append(f"| {task} | {t['columns']} | {t['score_all_seconds']:.2f} | {t['score_30_seconds']:.2f} | "
                     f"{t['forecast_k30_seconds']:.1f} | {t['forecast_k30_method']} | {m['spearman']:.3f} / "
                     f"{m['precision_at_100']:.2f} / {m['rmse']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
