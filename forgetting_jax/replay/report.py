"""The replay experiment's outputs, in the experiment's directory E = W/experiments/<name>:
E/replay/results.json, table.md, replay.png, and its section of E/report.md (replaced, never
duplicated, when the experiment is run again); copies of them at W/replay/ and W/report.md (the
most recent replay command's)."""

import os
from fractions import Fraction
from typing import Any

import numpy as np

from forgetting_jax.analysis.stats import json_safe
from forgetting_jax.utils.markdown import markdown_table
from forgetting_jax.utils.io import atomic_path, write_json, write_text

MARKER = "<!-- forgetting-jax replay -->"


def _num(x: Any, digits: int = 4, sign: bool = True) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _p(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _steps_sentence(s: dict) -> str:
    """How many optimizer steps the runs had, and what that means for the task examples they saw."""
    batch, replay_steps, train_steps = s["batch_size"], s["replay_steps"], s["train_steps"]
    task_examples = s.get("task_examples_per_run", replay_steps * batch - s["replayed_per_run"])
    kept = {"last": " Every run kept its last step.", "best": " Every run kept its best validation step."}.get(
        s.get("result_step"), "")
    if s.get("protocol") == "final":
        return (f"Protocol final (the paper's final code): replay runs ran {replay_steps} optimizer steps of {batch} "
                f"examples, floor(train.steps x (1 + r)), none {train_steps}, so a replay run saw {task_examples} "
                f"task examples to none's {train_steps * batch}." + kept)
    if replay_steps == train_steps:
        return (f"Protocol project: every strategy, none included, ran {train_steps} optimizer steps of {batch} "
                f"examples: replayed examples took {s['replayed_per_run']} of a replay run's {replay_steps * batch} "
                f"batch slots, so it saw {task_examples} task examples to none's {train_steps * batch}." + kept)
    return (f"Replay runs ran {replay_steps} optimizer steps of {batch} examples, none {train_steps} "
            f"(replay.scale_steps: train.steps x (1 + r)), so a replay run saw {task_examples} task examples to "
            f"none's {train_steps * batch}." + kept)


def _heldout(s: dict) -> str:
    source = s.get("heldout") or "split"
    return "a seeded split of the upstream examples" if source == "split" else f"from {os.path.basename(source)}"


def render_section(results: dict, figure: str) -> str:
    """Markdown: what was run, the per-strategy table, the paired tests, per-task values, figure."""
    s = results["settings"]
    tasks, names = results["tasks"], results["strategies"]
    level = f"{100 * s['confidence']:.0f}%"
    summary = results["summary"]
    steps = results.get("steps", {})
    rows = []
    for name in names:
        e = summary[name]
        ci = f"[{_num(e['ci_low'])}, {_num(e['ci_high'])}]" if e["ci_low"] is not None else "n/a"
        reduction = e.get("reduction_vs_none")
        rows.append([name, _num(e["mean"]), ci, "" if reduction is None else f"{100 * reduction:.0f}%",
                     str(steps.get(name, "n/a"))])
    tests = [[f"{t['strategy']} vs {t['reference']}", _num(t["difference_mean"]),
              f"[{_num(t['difference_ci_low'])}, {_num(t['difference_ci_high'])}]" if t["difference_ci_low"] is not None
              else "n/a", f"{t['a_lower']}/{t['n']}", _p(t["t_p"]), _p(t["wilcoxon_p"])] for t in results["tests"]]
    per_task = [[task] + [_num(results["forgetting"][n].get(task)) for n in names] for task in tasks]
    parts = [
        MARKER,
        "## Replay: preventing forgetting",
        "",
        f"Each of {len(tasks)} new tasks (none of them a row of the matrix) was fine-tuned again with upstream "
        f"examples replayed: one per {float(1 / Fraction(s['ratio'])):g} task examples (r = {s['ratio']}, "
        f"{s['replayed_per_run']} replayed examples per run), drawn without replacement with probability "
        f"softmax(score / T), T = {s['temperature']:g}, from a pool of {s['pool']} upstream examples. Forgetting is "
        f"the mean NLL increase over the base model on {s['num_heldout']} held-out examples that are "
        f"never replayed ({_heldout(s)}). Predicted scores complete each "
        f"task's row from k = {s['k']} observed entries with the matrix's rows (predicted:rep_sim and "
        "predicted:rep_dot forecast it from the task's representation alone); ground_truth uses the true row; "
        "gt_mir:N takes the most forgotten of each random group of N, ppl_median the examples of median base "
        "perplexity, grad_prod_neg those whose base-model gradient opposes the task's most. "
        + _steps_sentence(s),
        "",
        markdown_table(["strategy", "mean forgetting", f"{level} CI", "reduction vs none", "optimizer steps"], rows),
        "",
        f"Paired across the {len(tasks)} tasks (difference = strategy - reference; negative: less forgetting; "
        "'lower in' counts the tasks where the strategy forgot less):",
        "",
        markdown_table(["comparison", "mean difference", f"{level} CI", "lower in", "paired t p", "Wilcoxon p"], tests),
        "",
        "Held-out forgetting per task:",
        "",
        markdown_table(["task"] + names, per_task),
    ]
    if results.get("exact_match"):
        em = results["exact_match"]
        em_rows = []
        for name in names:
            e = em["summary"][name]
            ci = f"[{_num(e['ci_low'])}, {_num(e['ci_high'])}]" if e["ci_low"] is not None else "n/a"
            em_rows.append([name, _num(e["mean"], sign=False), ci])
        parts += ["", "Exact-match drop on the held-out prompts (the share the base model answers right that the "
                  "run's model answers wrong):", "",
                  markdown_table(["strategy", "mean drop", f"{level} CI"], em_rows)]
    if results.get("prediction"):
        parts += ["", "How well the completed rows rank the pool's true forgetting (Spearman, mean over tasks):", "",
                  markdown_table(["method", "Spearman"], [[m, _num(v["spearman_mean"], 3, False)]
                                                  for m, v in results["prediction"].items()])]
    parts += ["", f"![replay]({figure})", ""]
    return "\n".join(parts)


def replay_figure(results: dict):
    """Left: mean held-out forgetting per strategy with its CI. Right: per task, each replay
    strategy's forgetting minus random replay's (the paired comparison; below 0: less forgetting)."""
    from forgetting_jax.analysis.figures import plt

    names, tasks = results["strategies"], results["tasks"]
    summary, forgetting = results["summary"], results["forgetting"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(names))
    means = np.asarray([summary[n]["mean"] for n in names], float)
    low = np.asarray([summary[n]["ci_low"] if summary[n]["ci_low"] is not None else summary[n]["mean"] for n in names],
                     float)
    high = np.asarray([summary[n]["ci_high"] if summary[n]["ci_high"] is not None else summary[n]["mean"]
                       for n in names], float)
    left.bar(x, means, color="tab:blue", alpha=0.7)
    left.errorbar(x, means, yerr=[means - low, high - means], fmt="none", color="black", capsize=4)
    left.set_xticks(x)
    left.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("held-out forgetting (NLL increase)")
    left.set_title(f"mean over {len(tasks)} tasks, {100 * results['settings']['confidence']:.0f}% CI", fontsize=9)
    reference = "random" if "random" in names else names[0]
    others = [n for n in names if n not in ("none", reference)]
    for task in tasks:
        right.plot(np.arange(len(others)), [forgetting[n][task] - forgetting[reference][task] for n in others], "o-",
                   alpha=0.6, label=task)
    right.axhline(0.0, color="black", lw=0.8)
    right.set_xticks(np.arange(len(others)))
    right.set_xticklabels(others, rotation=30, ha="right", fontsize=8)
    right.set_ylabel(f"forgetting - {reference} (per task)")
    right.set_title(f"paired with {reference} replay; below 0: less forgetting", fontsize=9)
    if len(tasks) <= 12:
        right.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def attach_section(report_path: str, section: str) -> None:
    """Replaces the replay section of the report (everything from MARKER on) with `section`."""
    text = ""
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8") as f:
            text = f.read()
    text = text.split(MARKER, 1)[0].rstrip("\n")
    write_text(report_path, (text + "\n\n" if text else "") + section)


def write_replay_report(experiment_dir: str, workdir: str, results: dict) -> str:
    """Writes E/replay/{results.json, table.md, replay.png} and the section of E/report.md of the
    experiment's directory E, then their copies at W/replay/ and W/report.md (process 0).
    Returns E/replay/table.md."""
    import jax

    from forgetting_jax.matrix.experiments import publish_file, publish_report

    out = os.path.join(experiment_dir, "replay")
    if jax.process_index() != 0:
        return os.path.join(out, "table.md")
    from forgetting_jax.analysis.figures import plt

    write_json(os.path.join(out, "results.json"), json_safe(results))
    fig = replay_figure(results)
    with atomic_path(os.path.join(out, "replay.png")) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    write_text(os.path.join(out, "table.md"), render_section(results, "replay.png"))
    attach_section(os.path.join(experiment_dir, "report.md"), render_section(results, "replay/replay.png"))
    for name in ("results.json", "replay.png", "table.md"):
        publish_file(os.path.join(out, name), os.path.join(workdir, "replay", name))
    publish_report(os.path.join(experiment_dir, "report.md"), workdir)
    matrix = os.path.join(experiment_dir, "forgetting.npz")
    if os.path.isfile(matrix) and os.path.isfile(os.path.join(experiment_dir, "analysis", "fits.json")):
        from forgetting_jax.matrix.html_report import write_html_report

        write_html_report(experiment_dir, matrix, os.path.basename(experiment_dir), workdir)
    return os.path.join(out, "table.md")
