"""The comparison of forgetting forecasters on one matrix: what `forgetting-jax predict` writes and
the report's "Predicting forgetting" section shows.

`compare` builds the methods (completion, the representation forecasters of prior work, the
reference forecasters), runs the protocol (predict/protocol.py) on the matrix file's arrays and
returns the results JSON:

  {"methods": {NAME: {rmse, f1, precision, recall, auc, spearman, precision_at_k (means over
   (test task, seed) pairs), "pooled": {rmse, f1, precision, recall} (over every scored entry),
   seconds, fit_seconds, rmse_std_over_seeds, per_task}},
   "headline": {"metrics": "pooled", "why": ...}, "best": {"rmse": NAME, "f1": NAME},
   "test_tasks": [...], "nonfinite": {"train": ..., "test": ...}, "settings": {...}}
"""

import dataclasses
import logging
from typing import Any, Callable, Mapping

import numpy as np

from forgetting_jax.experiment import PredictSettings
from forgetting_jax.predict import protocol, registry
from forgetting_jax.predict.methods import CompletionConfig

log = logging.getLogger("forgetting_jax.predict")

# Forecasters that use no information about the test task: reference points, never "the winner".
REFERENCE_POINTS = ("train_mean", "random")


@dataclasses.dataclass(frozen=True)
class ComparisonSettings:
    """Settings of one comparison (the `predict` command's flags, the report's config.predict)."""

    methods: tuple[str, ...] | None = None  # None: every method the file has what it needs for
    k: int = PredictSettings.k
    seeds: int = PredictSettings.seeds
    threshold: float | None = None  # None: 0.5 on a binary matrix (lost answers), else 0.0
    top_k: int = 100
    max_rank_columns: int = 50_000
    pair_batch: int | None = None
    chunk_columns: int | None = None
    split_seed: int = PredictSettings.split_seed
    sampling: str = "uniform"
    score_observed: bool = False
    per_task: bool = True
    completion: CompletionConfig = CompletionConfig()
    rep_dot: Any = None  # predict.rep_dot.RepDotConfig; None: its defaults
    logistic: Any = None  # predict.logistic.LogisticConfig; None: its defaults at completion's rank and seed
    lgmf: Any = None  # predict.lgmf.LgmfConfig of lgmf and lgmf_additive; None: its defaults at completion's seed
    train_tasks: tuple[str, ...] | None = None  # the rows that train every method; None: every non-test row
    encoder_inputs: Any = None  # predict.rep_dot_training.EncoderInputs: rep_dot with a trainable encoder


def available_methods(data: Mapping[str, Any], trained_encoder: bool = False) -> tuple[str, ...]:
    """Every method of the registry whose inputs the matrix file holds (random left out)."""
    return tuple(m for m in registry.KNOWN if m != "random" and not registry.missing_inputs(m, data, trained_encoder))


def trains_encoder(settings: "ComparisonSettings") -> bool:
    """True when rep_dot's encoder trains (settings.rep_dot.encoder full or top:K)."""
    return getattr(settings.rep_dot, "encoder", "frozen") != "frozen"


def threshold_for(data: Mapping[str, Any], settings: ComparisonSettings) -> float:
    """The forgetting threshold of F1, precision, recall and AUC: the settings' own, else 0.5 on a
    binary matrix (lost answers; a predicted probability above one half), else 0.0."""
    if settings.threshold is not None:
        return float(settings.threshold)
    from forgetting_jax.predict.logistic import is_binary

    return 0.5 if is_binary(data["Z"]) else 0.0


def compare(data: Mapping[str, Any], test_idx: np.ndarray, settings: ComparisonSettings,
            log_fn: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Runs the protocol for every method of `settings` on the matrix file's arrays `data`
    (analysis.matrix_file.read_matrix_file) with test rows `test_idx`; the results JSON (see the
    module docstring). Raises ValueError (a method's inputs are missing) or ProtocolError."""
    names = tuple(settings.methods) if settings.methods else available_methods(data, trains_encoder(settings))
    methods = registry.build_methods(names, settings.completion, data, settings.rep_dot, settings.logistic,
                                     settings.lgmf, settings.encoder_inputs)
    tasks = list(data["tasks"])
    train_idx = (protocol.select_train_tasks(tasks, settings.train_tasks, test_idx)
                 if settings.train_tasks else None)
    if hasattr(methods.get("rep_dot"), "test_rows"):
        methods["rep_dot"].test_rows = np.asarray(test_idx)
    run = protocol.run_protocol(
        data["Z"], test_idx, methods, k=settings.k, seeds=settings.seeds, threshold=threshold_for(data, settings),
        top_k=settings.top_k, max_rank_columns=settings.max_rank_columns, pair_batch=settings.pair_batch,
        chunk_columns=settings.chunk_columns, base_seed=settings.split_seed, log=log_fn,
        sampling=settings.sampling, score_observed=settings.score_observed, tasks=tasks, train_idx=train_idx)
    summary = protocol.summarize(run, tasks, per_task=settings.per_task)
    c = settings.completion
    return {
        "methods": summary,
        "headline": {"metrics": protocol.HEADLINE[0], "why": protocol.HEADLINE[1]},
        "best": best_methods(summary),
        "test_tasks": [tasks[i] for i in test_idx],
        "train_tasks": [tasks[i] for i in (np.setdiff1d(np.arange(len(tasks)), test_idx) if train_idx is None
                                           else train_idx)],
        "nonfinite": run["nonfinite"],
        "settings": dict(run["settings"], shape=list(data["Z"].shape), methods=list(methods), rank=c.rank,
                         reg=c.reg, max_iters=c.max_iters, knn_k=c.knn_k, shrinkage=c.shrinkage,
                         split_seed=settings.split_seed,
                         rep_dot=(dataclasses.asdict(methods["rep_dot"].config) if "rep_dot" in methods else None),
                         logistic=(dataclasses.asdict(methods["logistic"].config) if "logistic" in methods else None),
                         lgmf=_lgmf_settings(methods)),
    }


def _lgmf_settings(methods: Mapping[str, Any]) -> dict[str, Any] | None:
    """The LgmfConfig of lgmf and lgmf_additive (they share one), or None when neither runs."""
    for name in ("lgmf", "lgmf_additive"):
        if name in methods:
            return dataclasses.asdict(methods[name].config)
    return None


def best_methods(summary: Mapping[str, Any]) -> dict[str, str | None]:
    """The method with the lowest pooled RMSE and the one with the highest pooled F1, among those
    that use the test task (reference points left out)."""
    candidates = {name: entry["pooled"] for name, entry in summary.items() if name not in REFERENCE_POINTS}
    if not candidates:
        return {"rmse": None, "f1": None}
    return {"rmse": min(candidates, key=lambda name: candidates[name]["rmse"]),
            "f1": max(candidates, key=lambda name: candidates[name]["f1"])}


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The comparison as plain lines: the headline (pooled) figures, the per-row means beside
    them, and which method wins."""
    lines = [f"{'method':<15}{'RMSE pooled':>12}{'F1 pooled':>10}{'RMSE rows':>11}{'F1 rows':>9}{'AUC':>7}"
             f"{'seconds':>9}"]
    for name, entry in result["methods"].items():
        pooled = entry["pooled"]
        lines.append(f"{name:<15}{pooled['rmse']:>12.4f}{pooled['f1']:>10.3f}{_fmt(entry['rmse'], 4):>11}"
                     f"{_fmt(entry['f1'], 3):>9}{_fmt(entry['auc'], 3):>7}{entry['seconds']:>9.2f}")
    best = result["best"]
    lines.append(f"headline: {result['headline']['metrics']} ({result['headline']['why']})")
    if best["rmse"] is not None:
        lines.append(f"best: {best['rmse']} by pooled RMSE, {best['f1']} by pooled F1")
    return lines


def _fmt(x, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def rep_dot_config(steps: int = PredictSettings.rep_dot_steps, lr: float = PredictSettings.rep_dot_lr,
                   seeds: int = 1, encoder: str = PredictSettings.rep_dot_encoder,
                   lr_encoder: float = PredictSettings.rep_dot_encoder_lr, batch: int = PredictSettings.rep_dot_batch,
                   eval_every: int = PredictSettings.rep_dot_eval_every,
                   select: str = PredictSettings.rep_dot_select) -> Any:
    """A RepDotConfig with these settings (the rest at their defaults)."""
    from forgetting_jax.predict.rep_dot import RepDotConfig

    return RepDotConfig(steps=int(steps), lr_head=float(lr), seeds=int(seeds), encoder=encoder,
                        lr_encoder=float(lr_encoder), batch_tasks=int(batch), eval_every=int(eval_every),
                        select=select)


def predict_rep_dot_config(predict: Any) -> Any:
    """The RepDotConfig of config.predict (experiment.PredictSettings)."""
    return rep_dot_config(predict.rep_dot_steps, predict.rep_dot_lr, 1, predict.rep_dot_encoder,
                          predict.rep_dot_encoder_lr, predict.rep_dot_batch, predict.rep_dot_eval_every,
                          predict.rep_dot_select)

