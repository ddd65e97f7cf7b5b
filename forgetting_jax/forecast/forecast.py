"""Which upstream examples a fine-tuned checkpoint forgot, from k of them scored: the row of the
forgetting matrix it would have, completed from the matrix's rows.

  1. the matrix file (analysis/matrix_file.py) with its provenance (matrix/provenance.py): how its
     upstream examples are read, the base model's fingerprint and tokenizer, the base scores;
  2. the checkpoint (forecast/checkpoint.py), checked against that base;
  3. k columns chosen (uniform: a seeded draw over the scored columns; variance, leverage: from
     the matrix's rows, predict/selection.py), their upstream examples re-read from the matrix's
     upstream settings with the base tokenizer, scored under the checkpoint (the packed scorer):
     observed forgetting = NLL now - the matrix's base NLL (or the base's NLL rescored with
     --base);
  4. the row completed by a method fitted on every row of the matrix (auto: the method with the
     lowest pooled RMSE in the paper's protocol on this matrix at this k), then every upstream
     example ranked, most forgotten first, with replay weights softmax(predicted / T) (the replay
     experiment's);
  5. with verify = V: the top V predicted and V seeded random unscored examples scored too, so the
     ranking is checked on the user's own model: precision (the share of each group forgotten,
     true forgetting > 0), the share of the top V above the random group's 90th percentile (an
     estimate of the top decile: 10% for a ranking that knows nothing), the gap of their mean
     forgetting, the Spearman and RMSE of the verified entries.
"""

import dataclasses
import logging
import time
from typing import Sequence

import numpy as np

from forgetting_jax.forecast.checkpoint import ForecastError, check_base, resolve_checkpoint

log = logging.getLogger("forgetting_jax.forecast")

SELECTIONS = ("uniform", "variance", "leverage", "spread")  # predict/selection.py KINDS


@dataclasses.dataclass(frozen=True)
class ForecastSettings:
    k: int = 30
    method: str = "auto"  # a completion method, or auto
    select: str = "uniform"
    seed: int = 0
    temperature: float = 0.1
    verify: int = 0
    base: str | None = None  # a base model to rescore the scored examples with
    dtype: str | None = None  # scoring dtype (None: the matrix's)
    tokens_per_batch: int = 16384
    auto_seeds: int = 3  # protocol seeds of method=auto


@dataclasses.dataclass
class Forecast:
    """The forecast of one checkpoint: per upstream example (the matrix's columns) its predicted
    forgetting, rank, replay weight and, when scored, its observed forgetting."""

    ids: list[str]
    predicted_N: np.ndarray
    weights_N: np.ndarray
    observed: dict[int, float]  # column -> observed forgetting (the k scored, and the verified)
    summary: dict

    def lines(self) -> list[dict]:
        """One record per upstream example, most forgotten first."""
        order = np.argsort(-np.where(np.isfinite(self.predicted_N), self.predicted_N, -np.inf), kind="stable")
        out = []
        for rank, j in enumerate(order, start=1):
            line = {"id": self.ids[j], "predicted": _num(self.predicted_N[j]), "rank": rank,
                    "replay_weight": float(self.weights_N[j])}
            if int(j) in self.observed:
                line["observed"] = _num(self.observed[int(j)])
            out.append(line)
        return out


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def choose_columns(z_MxN: np.ndarray, valid_N: np.ndarray, k: int, select: str, seed: int) -> np.ndarray:
    """int64 [k]: the columns to score (never one without a base score)."""
    valid = np.flatnonzero(valid_N)
    if k < 1 or k >= valid.size:
        raise ForecastError(f"--k={k}: must be between 1 and the {valid.size} scored upstream examples minus one")
    if select == "uniform":
        return np.sort(np.random.Generator(np.random.PCG64([seed, 3])).choice(valid, k, replace=False))
    if select not in SELECTIONS:
        raise ForecastError(f"--select={select!r}: not one of {', '.join(SELECTIONS)}")
    from forgetting_jax.predict.selection import informative_columns

    return np.sort(np.asarray(informative_columns(z_MxN, k, select, seed=seed, valid_N=valid_N), np.int64))


def auto_method(data: dict, k: int, seeds: int, methods: Sequence[str] | None = None, fallback: str = "additive"
                ) -> tuple[str, dict]:
    """The method of `methods` (default: the completion methods) with the lowest pooled RMSE of the
    protocol on the matrix (30% of its rows as test tasks, `seeds` draws of k), and every method's
    RMSE; `fallback` when the matrix has too few rows or no RMSE is finite."""
    from forgetting_jax.experiment.choices import COMPLETION
    from forgetting_jax.predict.comparison import ComparisonSettings, compare
    from forgetting_jax.predict.protocol import select_test_tasks

    methods = tuple(methods or COMPLETION)
    tasks = list(data["tasks"])
    if len(tasks) < 3:
        return fallback, {}
    test_idx = select_test_tasks(tasks, test_fraction=0.3)
    result = compare(data, test_idx, ComparisonSettings(methods=methods, k=k, seeds=seeds), log_fn=log.debug)
    rmse = {m: result["methods"][m]["pooled"]["rmse"] for m in methods}
    finite = {m: v for m, v in rmse.items() if v is not None and np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else fallback
    log.info("method auto: %s (pooled RMSE of the protocol on this matrix at k = %d: %s)", best, k,
             ", ".join(f"{m} {v:.4f}" for m, v in finite.items()))
    return best, rmse


def _upstream_pairs(data: dict, matrix: str, tokenizer, columns: Sequence[int]) -> list:
    """The (ids, loss mask) pairs of the matrix's upstream examples `columns`, re-read from its
    upstream settings."""
    from forgetting_jax.matrix.provenance import upstream_settings
    from forgetting_jax.matrix.upstream import load_upstream

    settings = upstream_settings(data, matrix)
    by_id = {e.id: e for e in load_upstream(settings, tokenizer)}
    ids = data["example_ids"]
    missing = [ids[j] for j in columns if ids[j] not in by_id]
    if missing:
        raise ForecastError(f"{matrix}: upstream example {missing[0]!r} (and {len(missing) - 1} more) is not in its "
                            f"upstream set as read now ({settings.upstream} {settings.upstream_path!r}): has the file "
                            "moved or changed?")
    return [by_id[ids[j]].pair for j in columns]


class _Scorer:
    """Scores upstream columns under the checkpoint (and the base with --base)."""

    def __init__(self, data: dict, matrix: str, model_dir: str, tokenizer, settings: ForecastSettings):
        from forgetting_jax.models.loading import load_model

        self.data, self.matrix, self.tokenizer, self.settings = data, matrix, tokenizer, settings
        self.dtype = settings.dtype or data.get("scoring_dtype", "float32")
        self.config, self.params = load_model(model_dir, param_dtype=self.dtype, dtype=self.dtype)
        self.base = None
        if settings.base:
            self.base = load_model(settings.base, param_dtype=self.dtype, dtype=self.dtype)
        self.scored = 0

    def forgetting(self, columns: np.ndarray) -> np.ndarray:
        """float64 [len(columns)]: NLL under the checkpoint - the base's NLL."""
        import jax

        from forgetting_jax.score.scorer import Scorer, data_mesh

        pairs = _upstream_pairs(self.data, self.matrix, self.tokenizer, columns)
        tpb = int(self.settings.tokens_per_batch)
        mesh = data_mesh() if jax.default_backend() != "cpu" or jax.process_count() > 1 else None
        nll = Scorer(self.config, self.params, mesh=mesh).score(pairs, tokens_per_batch=tpb)[0].astype(np.float64)
        if self.base is not None:
            base = Scorer(*self.base, mesh=mesh).score(pairs, tokens_per_batch=tpb)[0].astype(np.float64)
        else:
            base = np.asarray(self.data["base_nll"], np.float64)[columns]
        self.scored += len(columns)
        return nll - base


def verify_ranking(predicted_N: np.ndarray, scorer: _Scorer, scored: np.ndarray, count: int, seed: int) -> dict:
    """Scores the top `count` predicted and `count` seeded random unscored columns (see the module
    docstring); their observed forgetting is returned under "observed"."""
    from scipy import stats

    candidates = np.setdiff1d(np.flatnonzero(np.isfinite(predicted_N)), scored)
    if 2 * count > candidates.size:
        raise ForecastError(f"--verify={count}: needs 2 x {count} unscored upstream examples, the matrix has "
                            f"{candidates.size}")
    top = candidates[np.argsort(-predicted_N[candidates], kind="stable")[:count]]
    rest = np.setdiff1d(candidates, top)
    random = np.random.Generator(np.random.PCG64([seed, 4])).choice(rest, count, replace=False)
    true_top, true_random = scorer.forgetting(top), scorer.forgetting(random)
    both = np.concatenate([top, random])
    truth = np.concatenate([true_top, true_random])
    rho = stats.spearmanr(predicted_N[both], truth).statistic
    decile = float(np.quantile(true_random, 0.9))  # the random sample's estimate of the top 10% threshold
    return {
        "n": int(count),
        "precision_top": float(np.mean(true_top > 0)), "precision_random": float(np.mean(true_random > 0)),
        "top_decile_threshold": decile, "top_in_top_decile": float(np.mean(true_top > decile)),
        "mean_forgetting_top": float(np.mean(true_top)), "mean_forgetting_random": float(np.mean(true_random)),
        "gap": float(np.mean(true_top) - np.mean(true_random)),
        "spearman": None if not np.isfinite(rho) else float(rho),
        "rmse": float(np.sqrt(np.mean((predicted_N[both] - truth) ** 2))),
        "observed": dict(zip(both.tolist(), truth.tolist())),
    }


def forecast(matrix: str, model: str, settings: ForecastSettings = ForecastSettings()) -> Forecast:
    """The forecast of checkpoint `model` from the matrix file `matrix` (see the module docstring)."""
    from forgetting_jax.analysis.matrix_file import read_matrix_file
    from forgetting_jax.matrix.provenance import tokenizer_fingerprint
    from forgetting_jax.models.loading import load_tokenizer
    from forgetting_jax.predict.methods import CompletionConfig
    from forgetting_jax.replay.sampler import softmax_weights
    from forgetting_jax.replay.strategies import Completer

    started = time.perf_counter()
    if settings.method in ("rep_sim", "rep_dot"):
        raise ForecastError(f"--method={settings.method} forecasts from the task's representation, not from scored "
                            "examples: give --task_data (the task's training data) instead of --model")
    data = read_matrix_file(matrix)
    if "base_nll" not in data:
        raise ForecastError(f"{matrix}: no field 'base_nll': the base scores are needed (a matrix of `run`)")
    if data.get("metric", "nll") != "nll":
        raise ForecastError(f"{matrix}: a matrix of {data['metric']}; forecast completes NLL forgetting rows")
    checkpoint = resolve_checkpoint(model, data.get("base_fingerprint"))
    tokenizer = load_tokenizer(checkpoint.model_dir)
    checked = check_base(data, matrix, checkpoint, tokenizer_fingerprint(tokenizer), bool(settings.base))
    z = data["Z"]
    valid = np.isfinite(np.asarray(data["base_nll"])) & np.isfinite(z).any(axis=0)
    columns = choose_columns(z, valid, int(settings.k), settings.select, int(settings.seed))
    scorer = _Scorer(data, matrix, checkpoint.model_dir, tokenizer, settings)
    t0 = time.perf_counter()
    observed_K = scorer.forgetting(columns)
    score_seconds = time.perf_counter() - t0
    log.info("scored %d of %d upstream examples under %s in %.1fs: mean forgetting %+.4f", len(columns), z.shape[1],
             model, score_seconds, float(np.nanmean(observed_K)))
    method, protocol_rmse = (auto_method(data, int(settings.k), int(settings.auto_seeds)) if settings.method == "auto"
                             else (settings.method, {}))
    finite = np.isfinite(observed_K)
    if not finite.any():
        raise ForecastError(f"no scored example has a finite forgetting under {model}")
    completer = Completer(z, CompletionConfig(seed=int(settings.seed)), int(settings.seed))
    cols, vals = columns[finite], observed_K[finite]
    predicted = completer.complete(method, cols[None], vals[None], ["forecast"])[0]
    predicted[columns[finite]] = observed_K[finite]  # what was measured is known
    predicted[~valid] = np.nan
    weights = softmax_weights(predicted, float(settings.temperature))
    observed = dict(zip(columns.tolist(), observed_K.tolist()))
    summary = {"matrix": matrix, "model": model, "checkpoint": checkpoint.kind, "task": checkpoint.task,
               "base_check": checked, "method": method, "protocol_rmse": protocol_rmse, "k": int(settings.k),
               "select": settings.select, "seed": int(settings.seed), "temperature": float(settings.temperature),
               "scored_columns": columns.tolist(), "observed_mean": float(np.nanmean(observed_K)),
               "upstream_examples": int(z.shape[1]), "matrix_rows": int(z.shape[0]),
               "score_seconds": score_seconds}
    if settings.verify:
        check = verify_ranking(predicted, scorer, columns, int(settings.verify), int(settings.seed))
        observed.update(check.pop("observed"))
        summary["verify"] = check
        log.info("verify: of the top %d predicted, %.0f%% forgotten (random: %.0f%%), mean forgetting %+.4f vs %+.4f "
                 "(gap %+.4f), Spearman %s", check["n"], 100 * check["precision_top"], 100 * check["precision_random"],
                 check["mean_forgetting_top"], check["mean_forgetting_random"], check["gap"], check["spearman"])
    summary["scored_examples"] = scorer.scored
    summary["seconds"] = time.perf_counter() - started
    return Forecast(list(data["example_ids"]), predicted, weights, observed, summary)
