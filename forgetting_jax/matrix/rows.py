"""One row of the matrix, reused or computed: fine-tune on a task, score the N upstream examples
with the fine-tuned parameters where they sit on the mesh, store the scores by fingerprint.

A `RowPlan` names everything a row depends on: the fine-tuning run (train/finetune.py
`FinetunePlan`), the examples it scores and the scoring settings; its fingerprint is the run's and
the scoring's. `get_or_compute(plan)` is the one place that decides reuse: a stored row (and, with
matrix.metric=exact_match, its stored answers) is returned as is; otherwise the run is trained (a
finished run that kept its model is reused), scored and written. `compute_group` trains P rows'
runs at once (matrix.parallel_tasks, train/multitask.py) and writes each as the one-task path
would. Replay's held-out rows are RowPlans too, with a store and examples of their own.
"""

import dataclasses
import logging
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.model_files import has_model, remove
from forgetting_jax.matrix.store import MatrixStore
from forgetting_jax.matrix.upstream import Upstream
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.loading import load_model
from forgetting_jax.score.scorer import Scorer
from forgetting_jax.train.finetune import FinetunePlan, RunResult, finetune, finetune_group
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.run")


def row_fingerprint(plan: FinetunePlan, scoring: dict) -> str:
    """The fingerprint of a row: its fine-tuning run's (`plan.fingerprint`) and the scoring's."""
    return fingerprint({"run": plan.fingerprint, **scoring})


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """A row to get: the fine-tuning run, where its scores are stored and what they score."""

    plan: FinetunePlan
    key: str  # its name in `store`: the task (a matrix row), or e.g. "<task>.<strategy>" (replay)
    store: MatrixStore
    examples: Sequence[Example]  # what the fine-tuned model scores
    scoring: dict  # the scoring's share of the fingerprint
    answers: bool = False  # also the model's answers to the upstream prompts (matrix.metric=exact_match)
    mixture: Any = None  # replay/mixture.py ReplayMixture in the run's batches, or None
    answering: Any = None  # with answers: the prompts answered (matrix/upstream.py Answering; None: the upstream's)

    @property
    def fingerprint(self) -> str:
        return row_fingerprint(self.plan, self.scoring)

    @property
    def what(self) -> str:
        mixed = "" if self.mixture is None else f" ({self.mixture.label})"
        return f"the model fine-tuned on {self.plan.task}{mixed}"


def matrix_row(up: Upstream, plan: FinetunePlan) -> RowPlan:
    """The RowPlan of the matrix row of `plan.task`: all N upstream examples, in the matrix store."""
    return RowPlan(plan, plan.task, up.store, up.examples, up.scoring, up.answering is not None)


def stored_answers(up: Upstream, task: str, row_fp: str, answering: Any = None) -> np.ndarray | None:
    """correct [n] of the model of row `row_fp` of `task` when its answers are stored, else None;
    answering: the prompts answered (None: the upstream examples', up.answering)."""
    from forgetting_jax.matrix.answers import answers_fingerprint

    answering = up.answering if answering is None else answering
    return answering.store.read(task, answers_fingerprint(row_fp, answering.answers), len(answering.answers.prompts))


def stored_row(up: Upstream, row: RowPlan) -> np.ndarray | None:
    """The scores [n] of `row` when it is finished (its answers stored too when it has them), else None."""
    fp = row.fingerprint
    scores = row.store.row(row.key, fp, len(row.examples))
    if scores is None or (row.answers and stored_answers(up, row.key, fp, row.answering) is None):
        return None
    return scores


def needs_training(up: Upstream, row: RowPlan, redo: bool = False) -> bool:
    """True when getting `row` trains its run: redo, or neither a finished row nor a finished run
    that kept a loadable model (whose model is then scored, not trained again)."""
    if redo:
        return True
    if row.plan.finished and has_model(row.plan.run_dir):
        return False
    return stored_row(up, row) is None


def _clear(row: RowPlan, redo: bool, without_model: bool = False) -> None:
    """Before `row`'s run is trained: with redo, its stored row and run go; a run that finished
    without a model it kept (dropped or damaged since) is trained again. without_model: the
    caller found it has none already (`needs_training`)."""
    if redo:
        remove(row.store.row_path(row.key, row.fingerprint))
        remove(row.plan.run_dir)
    elif row.plan.finished and (without_model or not has_model(row.plan.run_dir)):
        remove(row.plan.run_dir)


def get_or_compute(config: Experiment, workdir: str, up: Upstream, row: RowPlan,
                   redo: bool = False) -> tuple[np.ndarray, bool]:
    """(the scores [n] of `row`, reused): the stored row when it is finished; else fine-tune (a
    finished run that kept its model is reused), score and write it. redo: recompute both. The
    fine-tuned weights are scored where they sit on the mesh; they are exported (model/) only with
    matrix.keep_models."""
    if not redo:
        scores = stored_row(up, row)
        if scores is not None:
            return scores, True
    _clear(row, redo)
    keep = bool(config.matrix.keep_models)
    run = finetune(config, workdir, row.plan.task, up.base, mesh=up.mesh, mixture=row.mixture, plan=row.plan,
                   export=keep)
    scores = _score_and_write(config, up, row, run)
    if not keep and run.model_dir is not None:
        remove(run.model_dir)  # kept by an earlier experiment; this one does not keep models
    return scores, False


def compute_group(config: Experiment, workdir: str, up: Upstream, rows: Sequence[RowPlan], task_mesh: Mesh,
                  parallel: int, redo: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """matrix.parallel_tasks = P > 1: trains the runs of `rows` (at most P; `needs_training` holds
    for each) at once in one compiled step on `task_mesh`, then scores each one's parameters where
    they sit and writes its row. Returns {key: scores [n]}. redo: the keys recomputed from scratch."""
    for row in rows:
        _clear(row, row.key in redo, without_model=True)
    keep = bool(config.matrix.keep_models)
    plans = {row.plan.task: row.plan for row in rows}
    runs = finetune_group(config, workdir, list(plans), up.base, task_mesh, parallel, plans=plans, export=keep)
    by_task = {row.plan.task: row for row in rows}
    return {by_task[run.task].key: _score_and_write(config, up, by_task[run.task], run) for run in runs}


def _score_and_write(config: Experiment, up: Upstream, row: RowPlan, run: RunResult) -> np.ndarray:
    scores = score_run(config, up, row, run)
    row.store.write_row(row.key, row.fingerprint, scores)
    return scores


def score_params(config: ModelConfig, params: Any, examples: Sequence[Example], tokens_per_batch: int, what: str,
                 mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL [N], scored tokens [N]) of `examples` under `params` (host or device arrays, cast
    to config.param_dtype = matrix.dtype)."""
    nll, count, stats = Scorer(config, params, mesh=mesh).score([e.pair for e in examples],
                                                                tokens_per_batch=tokens_per_batch)
    log.info("scored %d upstream examples with %s: mean nll %.4f, %.0f tokens/s", len(examples), what,
             float(np.nanmean(nll)), stats.tokens_per_second)
    return nll, count


def score_run(config: Experiment, up: Upstream, row: RowPlan, run: RunResult) -> np.ndarray:
    """Mean NLL [n] of `row.examples` under the fine-tuned model of `run`: its parameters where they
    sit on the mesh (a run just trained), else its exported model/ (a finished run that kept it).
    The weights are rounded to train.export_dtype first, when set, as an export would store them.
    With row.answers, the model also answers the upstream prompts and its answers are stored."""
    if run.params is None:
        _, params = load_model(run.model_dir, param_dtype=config.matrix.dtype, dtype=config.matrix.dtype)
    else:
        export_dtype = config.train.export_dtype
        params = run.params if not export_dtype else jax.tree.map(lambda x: x.astype(export_dtype), run.params)
    nll = score_params(up.scoring_config, params, row.examples, up.tokens_per_batch, row.what, up.scoring_mesh)[0]
    if row.answers:
        from forgetting_jax.matrix.answers import answer, answers_fingerprint

        a = up.answering if row.answering is None else row.answering
        correct, completions = answer(up.scoring_config, params, a.answers, a.tokenizer, a.eos_ids,
                                      up.scoring_mesh, a.generate_batch_size, row.what)
        a.store.write(row.key, answers_fingerprint(row.fingerprint, a.answers), correct, completions)
        dropped = a.base_correct & ~correct
        log.info("task %s: %d of %d answers the base model got right are now wrong (%.1f%%)", row.key,
                 int(dropped.sum()), int(a.base_correct.sum()),
                 100 * float(dropped.sum()) / max(int(a.base_correct.sum()), 1))
    return nll


def finished_rows(store: MatrixStore, row_fps: dict[str, str], n: int) -> dict[str, np.ndarray]:
    """{task: ft_nll [n]} of the tasks of `row_fps` ({task: row fingerprint}) whose row is stored."""
    rows = {}
    for task, fp in row_fps.items():
        row = store.row(task, fp, n)
        if row is not None:
            rows[task] = row
    return rows
