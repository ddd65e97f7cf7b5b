"""A forecast before fine-tuning: which upstream examples a task will make the base model forget,
from the task's training data alone, with the representation forecasters of prior work (rep_sim,
rep_dot: predict/rep_sim.py, predict/rep_dot.py).

  1. the matrix file must hold the base model's representations (`run` with
     matrix.representations=True: example_embeddings, task_embeddings, task_example_last_hidden);
  2. the base model: --base=DIR, or the matrix's base_model_dir (recorded relative to the
     workspace that built it; looked up from the matrix file's directory upwards); its tokenizer
     must be the matrix's;
  3. the task's training examples (--task_data, `lm` or `chat` JSON lines) represented as the
     matrix's rows were: up to S of them (S = the matrix's task_example_last_hidden slots, a seeded
     subsample beyond), one pass of the packed scorer;
  4. the row forecast by the method (auto: the lower pooled RMSE of rep_sim and train_mean in the
     paper's protocol on this matrix; rep_dot when named: it trains its head first), every
     upstream example ranked with replay weights softmax(predicted / T).

Nothing is scored under a fine-tuned model, so there is nothing to verify (--verify refuses).
"""

import logging
import os
import time

import numpy as np

from forgetting_jax.forecast.checkpoint import ForecastError

log = logging.getLogger("forgetting_jax.forecast")

METHODS = ("rep_sim", "rep_dot", "train_mean")
NEEDED = ("example_embeddings", "task_embeddings", "task_example_last_hidden", "task_example_count")


def base_dir(data: dict, matrix: str, base: str | None) -> str:
    """The base model directory: `base`, or the matrix's base_model_dir (absolute, or relative to
    the workspace: the matrix file's directory or one of its parents)."""
    if base:
        return base
    recorded = data.get("base_model_dir")
    if not recorded:
        raise ForecastError(f"{matrix}: records no base model directory; pass --base=DIR (the base model)")
    if os.path.isabs(recorded):
        candidates = [recorded]
    else:
        here = os.path.dirname(os.path.abspath(matrix))
        candidates = [os.path.join(here, *[".."] * up, recorded) for up in range(4)]
    for path in candidates:
        if os.path.isfile(os.path.join(path, "config.json")):
            return os.path.normpath(path)
    raise ForecastError(f"{matrix}: its base model {recorded!r} is not found beside it (the workspace moved?); "
                        "pass --base=DIR (the base model)")


def task_representation(data: dict, matrix: str, task_data: str, task_format: str, config, params, tokenizer,
                        tokens_per_batch: int) -> dict:
    """The task's representation arrays ({"task_embeddings" [1, D], "task_example_last_hidden"
    [1, S, D], "task_example_count" [1]}) under the base (config, params)."""
    from forgetting_jax.data.errors import DataError
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.readers import read_records
    from forgetting_jax.matrix.provenance import upstream_settings
    from forgetting_jax.matrix.representations import represented_examples
    from forgetting_jax.score.scorer import Scorer

    s, d = data["task_example_last_hidden"].shape[1:]
    if d != config.hidden_size:
        raise ForecastError(f"{matrix}: representations of {d} dimensions, the base model has {config.hidden_size}; "
                            "is --base the matrix's base model?")
    try:
        max_length = int(upstream_settings(data, matrix).max_length)
    except ValueError:
        max_length = None
    try:
        records = read_records(task_data, task_format)
        if not records:
            raise DataError("no records", path=task_data)
        examples = encode_records(tokenizer, records, max_length, source=task_data)
    except (DataError, OSError) as err:
        raise ForecastError(f"--task_data: {err}") from err
    chosen = represented_examples(examples, s)
    mean, last, _ = Scorer(config, params).represent([e.pair for e in chosen], tokens_per_batch=tokens_per_batch)
    last_SxD = np.zeros((s, d), np.float32)
    last_SxD[:len(chosen)] = last
    log.info("represented %d of the %d training examples of %s with the base model", len(chosen), len(examples),
             task_data)
    return {"task_embeddings": mean.mean(0, keepdims=True).astype(np.float32), "task_example_last_hidden":
            last_SxD[None], "task_example_count": np.asarray([len(chosen)], np.int32)}


def forecast_before(matrix: str, task_data: str, settings, task_format: str = "chat"):
    """The forecast (forecast/forecast.py Forecast) of fine-tuning on `task_data`, before it."""
    from forgetting_jax.analysis.matrix_file import read_matrix_file
    from forgetting_jax.forecast.forecast import Forecast
    from forgetting_jax.matrix.provenance import tokenizer_fingerprint
    from forgetting_jax.models.loading import load_model, load_tokenizer
    from forgetting_jax.predict.comparison import rep_dot_config
    from forgetting_jax.predict.methods import CompletionConfig
    from forgetting_jax.replay.sampler import softmax_weights
    from forgetting_jax.replay.strategies import Completer

    started = time.perf_counter()
    if settings.verify:
        raise ForecastError("--verify needs --model (a fine-tuned checkpoint to score); --task_data forecasts "
                            "before fine-tuning")
    method = settings.method
    if method not in ("auto", *METHODS):
        raise ForecastError(f"--method={method}: with --task_data (no scored examples) one of auto, "
                            f"{', '.join(METHODS)}")
    data = read_matrix_file(matrix)
    missing = [key for key in NEEDED if key not in data]
    if missing:
        raise ForecastError(f"{matrix}: no field {missing[0]!r}: forecasting from task data needs the base model's "
                            "representations in the matrix (build it with --config.matrix.representations=True)")
    base = base_dir(data, matrix, settings.base)
    tokenizer = load_tokenizer(base)
    expected = data.get("tokenizer_fingerprint")
    if expected is not None and tokenizer_fingerprint(tokenizer) != expected:
        raise ForecastError(f"base model {base}: its tokenizer differs from the base tokenizer of {matrix}; is it "
                            "the matrix's base model?")
    dtype = settings.dtype or data.get("scoring_dtype", "float32")
    config, params = load_model(base, param_dtype=dtype, dtype=dtype)
    new = task_representation(data, matrix, task_data, task_format, config, params, tokenizer,
                              int(settings.tokens_per_batch))
    protocol_rmse = {}
    if method == "auto":
        from forgetting_jax.forecast.forecast import auto_method  # the better of rep_sim and the mean row

        method, protocol_rmse = auto_method(data, 1, int(settings.auto_seeds), ("rep_sim", "train_mean"), "rep_sim")
    z = data["Z"]
    representations = {key: data[key] for key in data if key in NEEDED or key == "example_last_hidden"}
    completer = Completer(z, CompletionConfig(seed=int(settings.seed)), int(settings.seed),
                          representations=representations, task_representations=lambda tasks: new,
                          rep_dot_config=rep_dot_config())
    name = os.path.splitext(os.path.basename(task_data))[0]
    # no entry of the row is observed: the methods here never read the (placeholder) observation
    predicted = completer.complete(method, np.zeros((1, 1), np.int64), np.zeros((1, 1)), [name])[0]
    valid = np.isfinite(np.asarray(data["base_nll"])) & np.isfinite(z).any(axis=0)
    predicted[~valid] = np.nan
    weights = softmax_weights(predicted, float(settings.temperature))
    summary = {"matrix": matrix, "task_data": task_data, "task_format": task_format, "base": base,
               "method": method, "protocol_rmse": protocol_rmse, "k": 0, "select": None,
               "represented_examples": int(new["task_example_count"][0]), "upstream_examples": int(z.shape[1]),
               "matrix_rows": int(z.shape[0]), "temperature": float(settings.temperature),
               "scored_examples": 0, "seconds": time.perf_counter() - started}
    return Forecast(list(data["example_ids"]), predicted, weights, {}, summary)

