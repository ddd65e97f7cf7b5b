"""The base model's representations of the upstream examples and of each task's training examples,
for the representation forecasters of prior work (predict: rep_sim, rep_dot).

From one pass of the packed scorer (score/scorer.py `Scorer.represent`; for the upstream examples
of a new base model, the same pass that scores them, `Scorer.score_and_represent`) over the
examples under the base model's weights, per example: the mean of its final hidden states over its tokens (the
mean-pooled embedding) and its final hidden state at its last token (what rep_dot's head reads).
They go into the matrix file beside Z:

  example_embeddings        [N, D]     mean-pooled, upstream examples
  example_last_hidden       [N, D]     last token, upstream examples
  task_embeddings           [M, D]     per task, the mean of its represented training examples'
                                       mean-pooled embeddings
  task_example_last_hidden  [M, S, D]  last token of up to S training examples per task (zeros
                                       beyond task_example_count)
  task_example_count        [M]        real slots of task_example_last_hidden

Cached in the workspace by fingerprint, like the base scores (process 0 writes):

  W/matrix/representations/upstream/<fp>.npz       mean [N, D], last [N, D]; fp: the base scores'
                                                   (base model, scoring dtype, upstream set)
  W/matrix/representations/tasks/<task>/<fp>.npz   mean [D], last [S, D], count; fp: the base
                                                   model, dtype, the task's training data and S

Any task gets its representation the same way (`task_representation`), a row of the matrix or
not (the protocol's test tasks are rows; replay's new tasks are not). The S examples are a
seeded subsample of the task's training examples when it has more than S (matrix.task_examples).
Memory: the arrays are float32, 8 N D + 4 M S D bytes in the matrix file.
"""

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from forgetting_jax.data.records import Example
from forgetting_jax.matrix.store import read_checked, task_filename
from forgetting_jax.utils.runtime import is_main
from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz

log = logging.getLogger("forgetting_jax.run")

VERSION = 1  # of what a representation is; part of every fingerprint
UPSTREAM_ARRAYS = {"mean": ("f", 2), "last": ("f", 2)}
TASK_ARRAYS = {"mean": ("f", 1), "last": ("f", 2), "count": ("iu", 0)}
MATRIX_ARRAYS = ("example_embeddings", "example_last_hidden", "task_embeddings", "task_example_last_hidden",
                 "task_example_count")


@dataclasses.dataclass(frozen=True)
class TaskRepresentation:
    """One task's representation by the base model."""

    mean_D: np.ndarray  # the mean over its represented examples of their mean-pooled embeddings
    last_SxD: np.ndarray  # the last-token hidden states of those examples (count real rows)
    count: int


class RepresentationStore:
    """The cached representations under W/matrix/representations (see the module docstring)."""

    def __init__(self, matrix_root: str):
        self.root = os.path.join(matrix_root, "representations")

    def upstream_path(self, fp: str) -> str:
        return os.path.join(self.root, "upstream", fp + ".npz")

    def task_path(self, task: str, fp: str) -> str:
        return os.path.join(self.root, "tasks", task_filename(task), fp + ".npz")

    def upstream(self, fp: str, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        data = read_checked(self.upstream_path(fp), fp, UPSTREAM_ARRAYS)
        if data is None or data["mean"].shape[0] != n or data["last"].shape != data["mean"].shape:
            return None
        return data["mean"], data["last"]

    def write_upstream(self, fp: str, mean_NxD: np.ndarray, last_NxD: np.ndarray) -> None:
        if is_main():
            write_npz(self.upstream_path(fp), mean=np.asarray(mean_NxD, np.float32),
                      last=np.asarray(last_NxD, np.float32), fingerprint=np.asarray(fp))

    def task(self, task: str, fp: str) -> TaskRepresentation | None:
        data = read_checked(self.task_path(task, fp), fp, TASK_ARRAYS)
        if data is None:
            return None
        return TaskRepresentation(data["mean"], data["last"], int(data["count"]))

    def write_task(self, task: str, fp: str, rep: TaskRepresentation) -> None:
        if is_main():
            write_npz(self.task_path(task, fp), mean=np.asarray(rep.mean_D, np.float32),
                      last=np.asarray(rep.last_SxD, np.float32), count=np.asarray(rep.count, np.int32),
                      fingerprint=np.asarray(fp))


def represent(up: Any, weights: Any, examples: Sequence[Example], what: str,
              shape: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean-pooled [n, D], last-token [n, D]) final hidden states of `examples` under the base
    weights `weights` (matrix.upstream.BaseWeights of `up`, a matrix.upstream.Upstream), with the
    scoring config and mesh of the matrix; `shape`: a fixed batch shape (score.scorer.ScoreShape;
    planned from the examples when None)."""
    mean, last, stats = weights.scorer().represent([e.pair for e in examples], shape=shape,
                                                   tokens_per_batch=up.tokens_per_batch)
    log.info("represented %d %s with the base model, %.0f tokens/s", len(examples), what, stats.tokens_per_second)
    return mean, last


def task_shape(up: Any, examples: Sequence[Example]) -> Any:
    """One batch shape for the training examples of every task (one compilation): rows as long as
    the longest example, rounded up to 64 tokens, as many as matrix.tokens_per_batch holds (a
    multiple of the devices)."""
    from forgetting_jax.score.scorer import ScoreShape

    longest = max((len(e) for e in examples), default=1)
    row_length = -(-longest // 64) * 64
    devices = 1 if up.scoring_mesh is None else up.scoring_mesh.shape["data"]
    rows = max(1, up.tokens_per_batch // row_length)
    return ScoreShape(rows_per_batch=-(-rows // devices) * devices, row_length=row_length)


def upstream_representation_key(base_scores_fp: str) -> str:
    """The fingerprint of the upstream examples' representations, from the base scores' (the base
    model, the upstream examples, the scoring dtype)."""
    return fingerprint({"representations": VERSION, "base_scores": base_scores_fp})


def upstream_representation(up: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """(example_embeddings [N, D], example_last_hidden [N, D]) of the upstream examples, cached
    (prepare_upstream computes them in the base scores' pass when neither is stored)."""
    store = RepresentationStore(up.store.root)
    fp = upstream_representation_key(up.base_scores_fp)
    cached = store.upstream(fp, len(up.examples))
    if cached is not None:
        return cached
    mean, last = represent(up, weights, up.examples, "upstream examples")
    store.write_upstream(fp, mean, last)
    return mean, last


def represented_examples(train_examples: Sequence[Example], max_examples: int, seed: int = 0) -> list[Example]:
    """The training examples of a task that represent it: all, or a seeded subsample of
    `max_examples` (in their order)."""
    chosen = list(train_examples)
    if len(chosen) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), max_examples, replace=False))
        chosen = [chosen[i] for i in keep]
    return chosen


def task_representation(up: Any, weights: Any, task: str, train_examples: Sequence[Example], max_examples: int,
                        shape: Any = None) -> TaskRepresentation:
    """The base model's representation of `task` from its training examples (up to
    `max_examples`, a seeded subsample beyond; `represented_examples`), cached by fingerprint.
    weights: the base weights (matrix.upstream.BaseWeights); shape: the batch shape of the pass
    (`task_shape`; planned from the examples when None)."""
    from forgetting_jax.train.inputs import examples_fingerprint

    chosen = represented_examples(train_examples, max_examples)
    if shape is not None and max((len(e) for e in chosen), default=0) > shape.row_length:
        shape = None  # longer than the shared shape: a shape of its own
    store = RepresentationStore(up.store.root)
    fp = fingerprint({"representations": VERSION, "base": up.base.fingerprint, "dtype": up.scoring["dtype"],
                      "examples": examples_fingerprint(chosen), "max_examples": int(max_examples)})
    cached = store.task(task, fp)
    if cached is not None:
        return cached
    d = up.scoring_config.hidden_size
    last_SxD = np.zeros((max_examples, d), np.float32)
    if not chosen:
        rep = TaskRepresentation(np.zeros(d, np.float32), last_SxD, 0)
    else:
        mean, last = represent(up, weights, chosen, f"training examples of task {task}", shape)
        last_SxD[:len(chosen)] = last
        rep = TaskRepresentation(mean.mean(0).astype(np.float32), last_SxD, len(chosen))
    store.write_task(task, fp, rep)
    return rep


def representation_arrays(up: Any, weights: Any, tasks: Sequence[str], train_examples: dict[str, Sequence[Example]],
                  max_examples: int) -> dict[str, np.ndarray]:
    """The representation arrays of a matrix file (MATRIX_ARRAYS) for its rows `tasks`, given each
    task's training examples, under the base weights `weights` (matrix.upstream.BaseWeights)."""
    mean_NxD, last_NxD = upstream_representation(up, weights)
    shape = task_shape(up, [e for task in tasks for e in represented_examples(train_examples[task], max_examples)])
    reps = [task_representation(up, weights, task, train_examples[task], max_examples, shape) for task in tasks]
    d = mean_NxD.shape[1]
    return {
        "example_embeddings": mean_NxD,
        "example_last_hidden": last_NxD,
        "task_embeddings": np.stack([r.mean_D for r in reps]) if reps else np.zeros((0, d), np.float32),
        "task_example_last_hidden": (np.stack([r.last_SxD for r in reps]) if reps
                                     else np.zeros((0, max_examples, d), np.float32)),
        "task_example_count": np.asarray([r.count for r in reps], np.int32),
    }
