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


def missing_inputs(name: str, representations: Mapping[str, np.ndarray] | None,
                   trained_encoder: bool = False) -> list[str]:
    """The arrays of the matrix file that method `name` needs and `representations` lacks (for
    a binary-only method given the matrix file's arrays: ["a binary Z"] when Z is not 0/1;
    rep_dot with a trained encoder needs none: it encodes the examples itself)."""
    reps = representations or {}
    if name == "rep_dot" and trained_encoder:
        return []
    if name in BINARY and reps.get("Z") is not None:
        from forgetting_jax.predict.logistic import is_binary

        return [] if is_binary(reps["Z"]) else ["a binary Z (0/1 entries: matrix.metric=exact_match)"]
    return [key for key in NEEDS.get(name, ()) if reps.get(key) is None]


def check_methods(names: Sequence[str], representations: Mapping[str, np.ndarray] | None = None,
                  trained_encoder: bool = False) -> None:
    """ValueError naming an unknown method, or the arrays a representation method lacks."""
    for name in names:
        if name not in KNOWN:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(KNOWN)}")
        missing = missing_inputs(name, representations, trained_encoder)
        if missing and name in BINARY:
            raise ValueError(f"method {name} needs {', '.join(missing)}")
        if missing:
            raise ValueError(f"method {name} needs {', '.join(missing)} in the matrix file (written by "
                             "`forgetting-jax run` with matrix.representations)")


def build_methods(names: Sequence[str], config: CompletionConfig = CompletionConfig(),
                  representations: Mapping[str, np.ndarray] | None = None,
                  rep_dot_config: Any = None, logistic_config: Any = None,
                  lgmf_config: Any = None, encoder_inputs: Any = None) -> dict[str, Any]:
    """Method objects by name.

    representations: the matrix file's representation arrays (matrix/representations.py), which
    rep_sim (task_embeddings [M, D], example_embeddings [N, D]) and rep_dot
    (task_example_last_hidden [M, S, D], task_example_count [M], example_last_hidden [N, D])
    need. rep_dot_config: a predict.rep_dot.RepDotConfig (default settings when None);
    logistic_config: a predict.logistic.LogisticConfig (likewise); lgmf_config: a
    predict.lgmf.LgmfConfig of lgmf and lgmf_additive (default settings at config's seed when None).
    encoder_inputs: a predict.rep_dot_training.EncoderInputs, which rep_dot with a trainable encoder
    (rep_dot_config.encoder full or top:K) needs instead of the representation arrays.
    """
    trained = rep_dot_config is not None and getattr(rep_dot_config, "encoder", "frozen") != "frozen"
    if trained and "rep_dot" in names and encoder_inputs is None:
        raise ValueError(f"rep_dot with encoder {rep_dot_config.encoder} needs the workspace the matrix was built in "
                         "(--workdir and --config)")
    check_methods(names, representations, trained)
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
        elif name in ("lgmf", "lgmf_additive"):
            from forgetting_jax.predict.lgmf import LgmfConfig, LgmfMethod

            out[name] = LgmfMethod(lgmf_config or LgmfConfig(seed=config.seed), additive=name == "lgmf_additive")
        elif name == "train_mean":
            out[name] = baselines.TrainMean()
        elif name == "observed_mean":
            out[name] = baselines.ObservedMean()
        elif name == "random":
            out[name] = baselines.RandomForecast()
        elif name == "rep_sim":
            out[name] = baselines.RepresentationSimilarity(reps["task_embeddings"], reps["example_embeddings"])
        elif name == "rep_dot" and trained:
            from forgetting_jax.predict.rep_dot_training import TrainedRepDot

            out[name] = TrainedRepDot(encoder_inputs, rep_dot_config)
        elif name == "rep_dot":
            from forgetting_jax.predict.rep_dot import RepDot, RepDotConfig

            out[name] = RepDot(reps["task_example_last_hidden"], reps["task_example_count"],
                               reps["example_last_hidden"], rep_dot_config or RepDotConfig())
    return out
