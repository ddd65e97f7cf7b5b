"""Method names of the protocol and how to build each one."""

from typing import Any, Sequence

import numpy as np

from forgetting_jax.predict import baselines
from forgetting_jax.predict.methods import CompletionConfig, FactorMethod, KnnMethod

COMPLETION = ("additive", "multiplicative", "als", "knn")
BASELINES = ("train_mean", "observed_mean", "random", "rep_sim")
DEFAULT_METHODS = COMPLETION + BASELINES[:3]


def build_methods(names: Sequence[str], config: CompletionConfig = CompletionConfig(),
                  task_embeddings: np.ndarray | None = None,
                  example_embeddings: np.ndarray | None = None) -> dict[str, Any]:
    """Method objects by name; `rep_sim` needs task and example embeddings."""
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
        elif name == "train_mean":
            out[name] = baselines.TrainMean()
        elif name == "observed_mean":
            out[name] = baselines.ObservedMean()
        elif name == "random":
            out[name] = baselines.RandomForecast()
        elif name == "rep_sim":
            if task_embeddings is None or example_embeddings is None:
                raise ValueError("method rep_sim needs task_embeddings [M, D] and "
                                 "example_embeddings [N, D]")
            out[name] = baselines.RepresentationSimilarity(task_embeddings, example_embeddings)
        else:
            raise ValueError(f"unknown method {name!r}; known: "
                             f"{', '.join(COMPLETION + BASELINES)}")
    return out
