"""The "Predicting forgetting" section of an experiment's report: the paper's protocol on the
matrix just built (config.predict: test fraction, k, seeds, methods), comparing matrix completion
with the representation forecasters of prior work and the reference forecasters.

It writes analysis/prediction.json (the `forgetting-jax predict` results JSON) and
analysis/prediction.png, and returns the markdown. A matrix too small for the protocol (fewer
than 2 tasks, or a test row with at most k observed entries) gets a section that says so.
"""

import dataclasses
import logging
import os
from typing import Any, Callable

import numpy as np

from forgetting_jax.utils.io import atomic_path, write_json
from forgetting_jax.utils.markdown import markdown_table

log = logging.getLogger("forgetting_jax.run")


def comparison_settings(predict: Any, data: dict, encoder: Callable | None = None) -> Any:
    """The ComparisonSettings of config.predict; methods whose inputs the file lacks are dropped
    (with a note in the log) rather than failing the report. encoder(tasks, example_ids): the
    EncoderInputs of a trainable rep_dot encoder (matrix/encoder_inputs.py), called only when
    predict.rep_dot_encoder trains and rep_dot is compared."""
    from forgetting_jax.predict import comparison, registry
    from forgetting_jax.predict.methods import CompletionConfig

    trains = predict.rep_dot_encoder != "frozen" and encoder is not None
    methods = []
    for name in predict.methods:
        missing = registry.missing_inputs(name, data, trains)
        if missing:
            log.info("prediction report: %s left out (it needs %s)", name, ", ".join(missing))
        else:
            methods.append(name)
    return comparison.ComparisonSettings(
        methods=tuple(methods), k=int(predict.k), seeds=int(predict.seeds), threshold=(None if predict.threshold is None
                                                                          else float(predict.threshold)),
        split_seed=int(predict.split_seed), per_task=False,
        completion=CompletionConfig(rank=int(predict.rank), reg=float(predict.reg)),
        rep_dot=dataclasses.replace(comparison.predict_rep_dot_config(predict),
                                    **({} if trains else {"encoder": "frozen"})),
        train_tasks=tuple(predict.train_tasks) or None,
        encoder_inputs=encoder(data["tasks"], data["example_ids"]) if trains and "rep_dot" in methods else None)


def prediction_section(data: dict, predict: Any, analysis_dir: str, figures_dir: str,
                       encoder: Callable | None = None) -> tuple[str, dict | None]:
    """(markdown of the section, the results JSON or None when the protocol cannot run);
    encoder: as for `comparison_settings`."""
    from forgetting_jax.analysis.nonfinite import NonFinite
    from forgetting_jax.analysis.stats import json_safe
    from forgetting_jax.predict import comparison, protocol

    header = ["## Predicting forgetting", ""]
    z = data["Z"]
    try:
        settings = comparison_settings(predict, data, encoder)
        named = tuple(predict.test_tasks) or None
        test_idx = protocol.select_test_tasks(data["tasks"], named, None if named else float(predict.test_fraction),
                                              int(predict.split_seed))
        result = comparison.compare(data, test_idx, settings)
    except (protocol.ProtocolError, ValueError) as err:
        return "\n".join(header + [f"The protocol did not run on this matrix: {err}.", ""]), None
    write_json(os.path.join(analysis_dir, "prediction.json"), json_safe(result))
    figure = os.path.join(analysis_dir, "prediction.png")
    _figure(result, figure)

    rows = []
    for name, entry in result["methods"].items():
        pooled = entry["pooled"]
        rows.append([name, _kind(name), f"{pooled['rmse']:.4f}", f"{pooled['f1']:.3f}", _fmt(entry["rmse"], 4),
                     _fmt(entry["f1"], 3), _fmt(entry["auc"], 3), f"{entry['seconds']:.2f}"])
    best = result["best"]
    nonfinite = result["nonfinite"]
    m, n = z.shape
    rep_dot = result["settings"].get("rep_dot") or {}
    encoded = ("the base model's representations" if rep_dot.get("encoder", "frozen") == "frozen" else
               f"representations (rep_dot: of an encoder trained with its head, {rep_dot['encoder']}, "
               f"{rep_dot['steps']} steps)")
    held_out = ("named in predict.test_tasks" if predict.test_tasks
                else f"a seeded {100 * float(predict.test_fraction):.0f}%")
    parts = header + [
        f"Can the forgetting of an unseen task be predicted before fine-tuning on it? {len(test_idx)} of the "
        f"{m} tasks are held out ({held_out}); every method learns from "
        f"{len(result['train_tasks'])} other rows only. Matrix completion sees k = {settings.k} entries of each test "
        f"row (scored after fine-tuning on it: {settings.k} forward passes instead of {n}), drawn {settings.seeds} "
        f"times; the representation forecasters of prior work predict from {encoded} of the task's and the "
        "upstream examples alone. Metrics are on the entries not observed; forgotten = "
        f"Z > {result['settings']['threshold']:g} for F1 and AUC.",
        "",
        f"Headline figures: **{result['headline']['metrics']}** ({result['headline']['why']}).",
        "",
        markdown_table(["method", "kind", "RMSE (pooled)", "F1 (pooled)", "RMSE (row mean)", "F1 (row mean)",
                        "AUC (row mean)", "seconds"], rows),
        "",
    ]
    if best["rmse"] is not None:
        parts += [f"**{best['rmse']}** predicts best by pooled RMSE and **{best['f1']}** by pooled F1."]
        rep = [name for name in ("rep_sim", "rep_dot") if name in result["methods"]]
        completion = [name for name in ("additive", "multiplicative", "als", "knn") if name in result["methods"]]
        if rep and completion:
            best_rep = min(rep, key=lambda k: result["methods"][k]["pooled"]["rmse"])
            best_completion = min(completion, key=lambda k: result["methods"][k]["pooled"]["rmse"])
            a, b = (result["methods"][k]["pooled"]["rmse"] for k in (best_completion, best_rep))
            verdict = "beats" if a < b else "does not beat"
            parts += ["", f"Matrix completion ({best_completion}, RMSE {a:.4f}) {verdict} the best representation "
                      f"forecaster ({best_rep}, RMSE {b:.4f}) on this matrix."]
    for part in ("train", "test"):
        if nonfinite[part]["count"]:
            parts += ["", f"- {part} rows: {NonFinite.from_dict(nonfinite[part]).describe('Z')}."]
    parts += ["", f"![prediction]({os.path.join(figures_dir, 'prediction.png')})", "",
              f"All figures, per-row statistics and settings: `{os.path.join(figures_dir, 'prediction.json')}`; "
              "`forgetting-jax predict` runs the same protocol with other settings.", ""]
    return "\n".join(parts), result


def _kind(name: str) -> str:
    from forgetting_jax.predict import registry

    if name in registry.COMPLETION + registry.BINARY:
        return "completion"
    if name in registry.REPRESENTATION:
        return "representation (prior work)"
    return "reference"


def _fmt(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _figure(result: dict, path: str) -> None:
    """Pooled RMSE, pooled F1 and AUC (row mean; it separates methods when nearly every entry is
    forgotten and F1 saturates) per method, side by side."""
    from forgetting_jax.analysis.figures import plt

    names = list(result["methods"])
    rmse = [result["methods"][k]["pooled"]["rmse"] for k in names]
    f1 = [result["methods"][k]["pooled"]["f1"] for k in names]
    colours = ["tab:blue" if _kind(k) == "completion" else "tab:orange" if _kind(k).startswith("rep")
               else "tab:gray" for k in names]
    auc = [result["methods"][k]["auc"] for k in names]
    auc = [np.nan if v is None else v for v in auc]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, values, label in ((axes[0], rmse, "RMSE (pooled, lower is better)"),
                              (axes[1], f1, "F1 (pooled, higher is better)"),
                              (axes[2], auc, "AUC (row mean, higher is better)")):
        ax.bar(range(len(names)), values, color=colours)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle("forgetting prediction of held-out tasks: completion (blue), representations (orange), "
                 "reference (grey)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def settings_stamp(predict: Any) -> dict | None:
    """What the section depends on besides the matrix (part of the report's reuse stamp)."""
    return None if predict is None or not predict.report else dataclasses.asdict(predict)
