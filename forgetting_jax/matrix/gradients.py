"""The base model's projected loss gradients of the upstream examples and of each task's training
examples, for the gradient similarity of the paper's final code (TRAK-style, score/gradients.py):
task i's score of upstream example j is <task_grad_i, example_grad_j> / P (`gradient_products`).

Per example, the gradient of its mean fp32 NLL over its scored tokens (upstream: the tokens the
scorer scores; training examples: their trained tokens) w.r.t. every parameter of the base model
(float32 weights, the matrix's scoring dtype for the products), projected to P =
matrix.gradient_dim dimensions (dense Rademacher, seed 0: `projection_spec`). They go into the
matrix file beside Z when matrix.gradient_dim > 0:

  example_gradients  [N, P]  upstream examples
  task_gradients     [M, P]  per task, the mean of the projected gradients of its represented
                             training examples (up to S = matrix.task_examples, the seeded
                             subsample of matrix.representations.represented_examples)

Cached in the workspace by fingerprint, like the representations (process 0 writes):

  W/matrix/gradients/upstream/<fp>.npz       gradients [N, P]
  W/matrix/gradients/tasks/<task>/<fp>.npz   gradient [P], count (examples averaged)

fp: VERSION, the base model, the scoring dtype, the examples (ids, tokens, masks), S for tasks,
and the projection (kind, P, seed, block size, PRNG; score.gradients.projection_spec).
Memory: 4 (N + M) P bytes in the matrix file; a pass holds rows x G float32 gradients per device.
"""

import logging
import os
import time
from typing import Any, Sequence

import numpy as np

from forgetting_jax.data.records import Example
from forgetting_jax.matrix.representations import represented_examples
from forgetting_jax.matrix.store import read_checked, task_filename
from forgetting_jax.utils.fingerprint import fingerprint
from forgetting_jax.utils.io import write_npz
from forgetting_jax.utils.runtime import is_main

log = logging.getLogger("forgetting_jax.run")

VERSION = 1  # of what a gradient is; part of every fingerprint
SEED = 0  # the projection's seed (the final code's)
KIND = "rademacher"  # the projection (the final code's TRAK CudaProjector)
UPSTREAM_ARRAYS = {"gradients": ("f", 2)}
TASK_ARRAYS = {"gradient": ("f", 1), "count": ("iu", 0)}
MATRIX_ARRAYS = ("example_gradients", "task_gradients")
COLUMN_AXES = {"example_gradients": 0}  # their upstream axes, for matrix/store.py's column selection
NO_COLUMN_AXIS = ("task_gradients",)
PROGRESS_SECONDS = 60.0  # a progress line at most this often during a long pass


class GradientStore:
    """The cached projected gradients under W/matrix/gradients (see the module docstring)."""

    def __init__(self, matrix_root: str):
        self.root = os.path.join(matrix_root, "gradients")

    def upstream_path(self, fp: str) -> str:
        return os.path.join(self.root, "upstream", fp + ".npz")

    def task_path(self, task: str, fp: str) -> str:
        return os.path.join(self.root, "tasks", task_filename(task), fp + ".npz")

    def upstream(self, fp: str, n: int, dim: int) -> np.ndarray | None:
        """The upstream gradients [n, dim] of fingerprint `fp`, or None."""
        data = read_checked(self.upstream_path(fp), fp, UPSTREAM_ARRAYS)
        if data is None or data["gradients"].shape != (n, dim):
            return None
        return data["gradients"]

    def write_upstream(self, fp: str, gradients_NxP: np.ndarray) -> None:
        if is_main():
            write_npz(self.upstream_path(fp), gradients=np.asarray(gradients_NxP, np.float32),
                      fingerprint=np.asarray(fp))

    def task(self, task: str, fp: str, dim: int) -> tuple[np.ndarray, int] | None:
        """(the task gradient [dim], the number of examples averaged) of fingerprint `fp`, or None."""
        data = read_checked(self.task_path(task, fp), fp, TASK_ARRAYS)
        if data is None or data["gradient"].shape != (dim,):
            return None
        return data["gradient"], int(data["count"])

    def write_task(self, task: str, fp: str, gradient_P: np.ndarray, count: int) -> None:
        if is_main():
            write_npz(self.task_path(task, fp), gradient=np.asarray(gradient_P, np.float32),
                      count=np.asarray(count, np.int32), fingerprint=np.asarray(fp))


def gradient_key(up: Any, examples: Sequence[Example], dim: int, **extra) -> str:
    """The fingerprint of the projected gradients of `examples` under `up`'s base model (its
    fingerprint, the scoring dtype, the examples, the projection; `extra` fields added)."""
    from forgetting_jax.score.gradients import projection_spec
    from forgetting_jax.train.inputs import examples_fingerprint

    return fingerprint({"gradients": VERSION, "base": up.base.fingerprint, "dtype": up.scoring["dtype"],
                        "examples": examples_fingerprint(list(examples)),
                        "projection": projection_spec(dim, SEED, KIND), **extra})


class _GradientModel:
    """The base model for gradients, loaded on first use: the Scorer's config, weights and mesh
    when they are float32 (no copy), else the base model's weights read again in float32."""

    def __init__(self, up: Any, weights: Any):
        self._up, self._weights, self._model = up, weights, None

    def get(self) -> tuple[Any, Any, Any]:
        """(config, float32 params, mesh)."""
        if self._model is None:
            up = self._up
            if up.scoring_config.param_dtype == "float32":
                scorer = self._weights.scorer()
                self._model = (scorer.config, scorer.params, scorer.mesh)
            else:
                from forgetting_jax.matrix.model_files import check_base_model
                from forgetting_jax.models.loading import load_model

                check_base_model(up.base)
                _, params = load_model(up.base.model_dir, param_dtype="float32", dtype=up.scoring_config.dtype)
                self._model = (up.scoring_config.replace(param_dtype="float32"), params, up.scoring_mesh)
        return self._model


def _compute(up: Any, model: _GradientModel, examples: Sequence[Example], dim: int, what: str,
             shape: tuple[int, int] | None = None) -> np.ndarray:
    """The projected gradients [n, dim] of `examples`, with a progress line now and then; shape:
    (the longest example, the most examples) of passes that share one batch shape."""
    from forgetting_jax.score.gradients import num_parameters, plan_rows, projected_gradients

    config, params, mesh = model.get()
    row_length = rows = None
    if shape is not None:
        devices = 1 if mesh is None else int(mesh.shape["data"])
        row_length = -(-max(shape[0], 1) // 64) * 64
        rows = plan_rows(shape[1], row_length, num_parameters(params), devices, up.tokens_per_batch)
    last = [time.perf_counter()]

    def progress(stats) -> None:
        if time.perf_counter() - last[0] >= PROGRESS_SECONDS and stats.examples < len(examples):
            last[0] = time.perf_counter()
            log.info("gradients of %s: %d of %d, %.1f examples/s", what, stats.examples, len(examples),
                     stats.examples_per_second)

    start = time.perf_counter()
    out = projected_gradients(config, params, examples, dim, seed=SEED, mesh=mesh, rows_per_batch=rows, kind=KIND,
                              row_length=row_length, tokens_per_batch=up.tokens_per_batch, progress=progress)
    seconds = time.perf_counter() - start
    log.info("projected gradients (P=%d) of %d %s with the base model, %.1f examples/s", dim, len(examples), what,
             len(examples) / max(seconds, 1e-9))
    return out


def upstream_gradients(up: Any, weights: Any, dim: int, model: _GradientModel | None = None) -> np.ndarray:
    """The upstream examples' projected gradients [N, dim], cached. up: matrix.upstream.Upstream;
    weights: its BaseWeights."""
    store = GradientStore(up.store.root)
    fp = gradient_key(up, up.examples, dim)
    cached = store.upstream(fp, len(up.examples), dim)
    if cached is not None:
        return cached
    gradients = _compute(up, model or _GradientModel(up, weights), up.examples, dim, "upstream examples")
    store.write_upstream(fp, gradients)
    return gradients


def task_gradient(up: Any, weights: Any, task: str, train_examples: Sequence[Example], max_examples: int, dim: int,
                  shape: tuple[int, int] | None = None, model: _GradientModel | None = None) -> np.ndarray:
    """The task's gradient [dim]: the mean of the projected gradients of its training examples
    (up to `max_examples`, the seeded subsample of `represented_examples`; zeros without any),
    cached. shape: (longest example, most examples) of every task's pass (one batch shape)."""
    chosen = represented_examples(train_examples, max_examples)
    store = GradientStore(up.store.root)
    fp = gradient_key(up, chosen, dim, max_examples=int(max_examples))
    cached = store.task(task, fp, dim)
    if cached is not None:
        return cached[0]
    gradient = np.zeros(dim, np.float32)
    if chosen:
        projected = _compute(up, model or _GradientModel(up, weights), chosen, dim,
                             f"training examples of task {task}", shape)
        gradient = projected.astype(np.float64).mean(0).astype(np.float32)
    store.write_task(task, fp, gradient, len(chosen))
    return gradient


def gradient_arrays(up: Any, weights: Any, tasks: Sequence[str], train_examples: dict[str, Sequence[Example]],
                    max_examples: int, dim: int) -> dict[str, np.ndarray]:
    """The gradient arrays of a matrix file (MATRIX_ARRAYS): example_gradients [N, dim] and
    task_gradients [M, dim] for its rows `tasks`, given each task's training examples, under the
    base weights `weights` (matrix.upstream.BaseWeights); the model is loaded only when something
    is not cached."""
    model = _GradientModel(up, weights)
    example_NxP = upstream_gradients(up, weights, dim, model)
    chosen = [represented_examples(train_examples[task], max_examples) for task in tasks]
    shape = (max((len(e) for c in chosen for e in c), default=1), max((len(c) for c in chosen), default=1))
    rows = [task_gradient(up, weights, task, train_examples[task], max_examples, dim, shape, model)
            for task in tasks]
    task_MxP = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return {"example_gradients": example_NxP, "task_gradients": task_MxP}


def gradient_products(task_gradients: np.ndarray, example_gradients_NxP: np.ndarray) -> np.ndarray:
    """The final code's gradient score of tasks and examples: [N] for one task gradient [P], [M, N]
    for [M, P] (float64 accumulation, float32 result; analysis/similarity.py's gradient_product).

    The final code divides the inner product of its TRAK vectors (unscaled +-1 projections) by P;
    these vectors are scaled by 1/sqrt(P), so that value is their plain inner product (which
    estimates the unprojected gradients' inner product).
    """
    task = np.asarray(task_gradients, np.float64)
    example = np.asarray(example_gradients_NxP, np.float64)
    return (task @ example.T).astype(np.float32)
