"""Method names of the protocol and how to build each one."""

from typing import Any, Mapping, Sequence

import numpy as np

from forgetting_jax.experiment.choices import (BASELINES, BINARY, COMPLETION,  # noqa: F401 (exported)
                                               PREDICT_METHODS as KNOWN, REPRESENTATION)
from forgetting_jax.predict import baselines
from forgetting_jax.predict.methods import CompletionConfig, FactorMethod, KnnMethod
DEFAULT_METHODS = COMPLETION + BASELINES

# What each representation method reads from the matrix file.
NEEDS = {
    "rep_sim": ("task_embeddings", "example_embeddings"),
    "rep_dot": ("task_example_last_hidden", "task_example_count", "example_last_hidden"),
}


def missing_inputs(name: str, representations: Mapping[str, np.ndarray] | None) -> list[str]:
    """The arrays of the matrix file that method `name` needs and `representations` lacks (for
    a binary-only method given the matrix file's arrays: ["a binary Z"] when Z is not 0/1)."""
    reps = representations or {}
    if name in BINARY and reps.get("Z") is not None:
        from forgetting_jax.predict.logistic import is_binary

        return [] if is_binary(reps["Z"]) else ["a binary Z (0/1 entries: matrix.metric=exact_match)"]
    return [key for key in NEEDS.get(name, ()) if reps.get(key) is None]


def check_methods(names: Sequence[str], representations: Mapping[str, np.ndarray] | None = None) -> None:
    """ValueError naming an unknown method, or the arrays a representation method lacks."""
    for name in names:
        if name not in KNOWN:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(KNOWN)}")
        missing = missing_inputs(name, representations)
        if missing and name in BINARY:
            raise ValueError(f"method {name} needs {', '.join(missing)}")
        if missing:
            raise ValueError(f"method {name} needs {', '.join(missing)} in the matrix file (written by "
                             "`forgetting-jax run` with matrix.representations)")


def build_methods(names: Sequence[str], config: CompletionConfig = CompletionConfig(),
                  representations: Mapping[str, np.ndarray] | None = None,
                  rep_dot_config: Any = None, logistic_config: Any = None) -> dict[str, Any]:
    """Method objects by name.

    representations: the matrix file's representation arrays (matrix/representations.py), which
    rep_sim (task_embeddings [M, D], example_embeddings [N, D]) and rep_dot
    (task_example_last_hidden [M, S, D], task_example_count [M], example_last_hidden [N, D])
    need. rep_dot_config: a predict.rep_dot.RepDotConfig (default settings when None);
    logistic_config: a predict.logistic.LogisticConfig (likewise).
    """
    check_methods(names, representations)
    reps = dict(representations or {})
    out: dict[str, Any] = {}
    for name in names:
        if name == "additive":
            out[name] = FactorMethod(name, 0, True, config)
        elif name == "multiplicative":
            out[name] = FactorMethod(name, 1, False, config)
        elif name == "als":
            out[name] = FactorMethod(name, config.rank, True, config)
        elif name == "knn":
            out[name] = KnnMethod(config)
        elif name == "logistic":
            from forgetting_jax.predict.logistic import LogisticConfig, LogisticMethod

            out[name] = LogisticMethod(logistic_config or LogisticConfig(rank=config.rank, seed=config.seed))
        elif name == "train_mean":
            out[name] = baselines.TrainMean()
        elif name == "observed_mean":
            out[name] = baselines.ObservedMean()
        elif name == "random":
            out[name] = baselines.RandomForecast()
        elif name == "rep_sim":
            out[name] = baselines.RepresentationSimilarity(reps["task_embeddings"], reps["example_embeddings"])
        elif name == "rep_dot":
            from forgetting_jax.predict.rep_dot import RepDot, RepDotConfig

            out[name] = RepDot(reps["task_example_last_hidden"], reps["task_example_count"],
                               reps["example_last_hidden"], rep_dot_config or RepDotConfig())
    return out
