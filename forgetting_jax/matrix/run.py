"""`forgetting-jax run`: from a config to a finished forgetting matrix, resumably.

  1. the base model and its scores of the N upstream examples (matrix/upstream.py);
  2. for each of the M tasks, its row (matrix/rows.py): fine-tune (reused when finished), score
     the upstream examples with the fine-tuned parameters where they sit on the mesh, write
     ft_nll[i] (Z[i] = ft_nll[i] - base_nll). With matrix.parallel_tasks = P > 1, the next P
     tasks that need a run are fine-tuned at once in one compiled step (train/multitask.py), then
     scored one by one; their fingerprints, files and rows are those of one-at-a-time runs. Each
     task's data is read and tokenized once per run;
  3. the experiment's matrix from the finished rows, then its analysis and report
     (matrix/experiments.py; the workspace layout is in WORKSPACE.md).

Base scores and rows are keyed by their fingerprints, so experiments sharing a workspace never
overwrite each other's: switching back to an earlier config retrains and rescores nothing. Kill
it at any moment and rerun the same command: finished rows, runs and base scores are reused by
fingerprint, an interrupted fine-tuning run resumes from its latest checkpoint, and the final
matrix equals an uninterrupted run's. Only process 0 writes.

A damaged workspace file is never fatal: a truncated or malformed row or base-score file is moved
aside (`<name>.damaged-<timestamp>`, matrix/store.py) and recomputed; a finished run whose exported
model cannot be read is trained again; a checkpoint step that cannot be restored falls back to
the previous step (train/checkpoints.py). Each with a warning naming the file.
"""

import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.experiments import (experiment_fingerprint, publish_matrix, publish_report,
                                               record_experiment, resolve_experiment)
from forgetting_jax.matrix.rows import (compute_group, finished_rows, get_or_compute, matrix_row, needs_training,
                                        row_fingerprint, stored_answers)
from forgetting_jax.matrix.upstream import Upstream, prepare_upstream
from forgetting_jax.train.driver import TrainingDiverged
from forgetting_jax.train.finetune import FinetunePlan, plan_finetune
from forgetting_jax.utils.runtime import barrier, is_main

log = logging.getLogger("forgetting_jax.run")


@dataclasses.dataclass
class RunSummary:
    """What a pipeline run produced and how much of it was reused."""

    workdir: str
    matrix_path: str  # the experiment's own matrix, W/experiments/<name>/forgetting.npz
    tasks: list[str]
    num_examples: int
    trained: list[str] = dataclasses.field(default_factory=list)
    reused_rows: list[str] = dataclasses.field(default_factory=list)
    base_scores_reused: bool = False
    seconds: float = 0.0
    report_path: str | None = None  # the experiment's report
    analysis: dict[str, Any] | None = None
    experiment_dir: str | None = None  # W/experiments/<name>
    metric: str = "nll"  # matrix.metric
    num_columns: int | None = None  # exact_match: the upstream examples kept as columns (matrix.em_columns)
    em_columns: str | None = None  # exact_match: matrix.em_columns
    diverged: list[str] = dataclasses.field(default_factory=list)  # left out (matrix.on_divergence=skip)


def config_tasks(config: Experiment) -> list[str]:
    """The tasks of `config`: data.tasks, or every task its data holds."""
    from forgetting_jax.train.inputs import discover_tasks

    return list(config.data.tasks) or discover_tasks(config.data)


def _log_row(task: str, ft_nll: np.ndarray, base_nll: np.ndarray) -> None:
    z = ft_nll - base_nll
    log.info("task %s: row written; mean forgetting %+.4f, %.0f%% of upstream examples forgotten", task,
             float(np.nanmean(z)), 100 * float(np.nanmean(z > 0)))


def run_pipeline(config: Experiment, workdir: str, tasks: Sequence[str] | None = None, redo: Sequence[str] = (),
                 analyze: bool = True, upstream: Upstream | None = None) -> RunSummary:
    """Builds (or completes) the forgetting matrix of `config` in `workdir`.

    tasks: the subset of the config's tasks to run (default: all). redo: tasks whose row and
    fine-tuning run are recomputed even when finished. upstream: `prepare_upstream`'s result when
    the caller has it already.
    """
    started = time.perf_counter()
    all_tasks = config_tasks(config)
    selected = list(tasks) if tasks else all_tasks
    unknown = [t for t in list(selected) + list(redo) if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the config's tasks: {', '.join(all_tasks)}")

    up = upstream or prepare_upstream(config, workdir)
    summary = RunSummary(workdir, "", all_tasks, len(up.examples), base_scores_reused=up.base_scores_reused,
                         metric=config.matrix.metric)
    plans: dict[str, FinetunePlan] = {}  # each task's data is read and tokenized once

    def plan(task: str) -> FinetunePlan:
        if task not in plans:
            plans[task] = plan_finetune(config, workdir, task, up.base)
        return plans[task]

    if config.matrix.parallel_tasks > 1:
        summary.trained += _train_in_groups(config, workdir, up, selected, redo, plan, summary.diverged)
    for position, task in enumerate(selected):
        if task in summary.trained or task in summary.diverged:
            continue
        what = f"task {position + 1}/{len(selected)}: {task}"
        log.info("%s%s", what, ": redoing its fine-tuning run and row" if task in redo else "")
        try:
            ft_nll, reused = get_or_compute(config, workdir, up, matrix_row(up, plan(task)), redo=task in redo)
        except TrainingDiverged as err:
            if config.matrix.on_divergence != "skip":
                raise
            log.warning("%s; matrix.on_divergence=skip: the matrix goes on without task %s", err, task)
            summary.diverged.append(task)
            continue
        if reused:
            summary.reused_rows.append(task)
            log.info("%s: row reused", what)
        else:
            summary.trained.append(task)
            _log_row(task, ft_nll, up.base_nll)

    barrier("rows written")  # process 0 wrote the rows that every process reads next
    row_fps = {task: row_fingerprint(plan(task), up.scoring) for task in all_tasks}
    answers = None if up.answering is None else {"answers": up.answering.answers.fingerprint,
                                                 "em_columns": config.matrix.em_columns}
    experiment = resolve_experiment(workdir, config.name, experiment_fingerprint(row_fps, up.base_scores_fp, answers))
    rows = finished_rows(up.store, row_fps, len(up.examples))
    if summary.diverged and not rows:
        raise ValueError(f"every task of the matrix diverged ({', '.join(summary.diverged)}): lower train.lr "
                         f"(now {config.train.lr:g}) and rerun")
    extras: dict[str, np.ndarray] = {}
    if up.answering is not None:
        from forgetting_jax.matrix.answers import answer_arrays

        correct_after = {task: stored_answers(up, task, row_fps[task]) for task in rows}
        rows = {task: row for task, row in rows.items() if correct_after[task] is not None}
    record_experiment(experiment, config.name, row_fps, up.base_scores_fp, answers)
    if config.matrix.representations:
        from forgetting_jax.matrix.representations import representation_arrays

        train = {task: plan(task).examples["train"] for task in rows}
        with up.base_weights() as weights:
            extras.update(representation_arrays(up, weights, list(rows), train, int(config.matrix.task_examples)))
    if config.matrix.gradient_dim > 0:  # the base model's projected loss gradients (matrix/gradients.py)
        from forgetting_jax.matrix.gradients import gradient_arrays

        train = {task: plan(task).examples["train"] for task in rows}
        with up.base_weights() as weights:
            extras.update(gradient_arrays(up, weights, list(rows), train, int(config.matrix.task_examples),
                                          int(config.matrix.gradient_dim)))
    if config.matrix.embedder:  # a sentence-embedding model's embeddings of the texts (analysis/similarity.py)
        from forgetting_jax.matrix.text_embeddings import text_embedding_arrays

        extras.update(text_embedding_arrays(config, workdir, list(rows), [e.id for e in up.examples],
                                            mesh=up.scoring_mesh, base=up.base,
                                            task_train={task: plan(task).examples["train"] for task in rows}))
    from forgetting_jax.matrix.provenance import provenance_arrays

    extras.update(provenance_arrays(config, up, workdir))  # how `forecast` re-reads and checks the columns
    from forgetting_jax.matrix.example_texts import example_texts
    from forgetting_jax.train.base import tokenizer as cached_tokenizer

    extras["example_texts"] = example_texts(cached_tokenizer(up.base.tokenizer_dir), [e.ids for e in up.examples])
    columns = None
    if up.answering is not None:
        from forgetting_jax.matrix.answers import kept_columns

        em_columns = config.matrix.em_columns
        extras.update(answer_arrays(up.answering.base_correct, correct_after, list(rows), em_columns))
        columns = kept_columns(up.answering.base_correct, em_columns)
        summary.num_columns, summary.em_columns = len(columns), em_columns
        log.info("matrix.em_columns=%s: %d of %d upstream examples are columns of the matrix%s", em_columns,
                 len(columns), len(up.examples), " (those the base model answers right)"
                 if em_columns == "base_correct" else "")
    up.store.assemble(rows, up.base_nll, [e.id for e in up.examples], [e.task for e in up.examples],
                      experiment.matrix_path, extras=extras, columns=columns)
    publish_matrix(experiment, workdir)
    barrier("matrix written")  # every process may read the matrix next (replay)
    summary.matrix_path, summary.experiment_dir = experiment.matrix_path, experiment.directory
    summary.tasks = list(rows)
    log.info("matrix: %d of %d tasks x %d upstream examples -> %s (the most recent run's copy: %s)", len(rows),
             len(all_tasks), len(up.examples) if columns is None else len(columns), experiment.matrix_path,
             up.store.matrix_path)
    if analyze and rows and is_main():
        import jax

        from forgetting_jax.matrix.report import write_report

        encoder = None
        if config.predict.rep_dot_encoder != "frozen" and jax.process_count() > 1:
            log.warning("the report's rep_dot keeps its frozen encoder on a multi-host run (the report is written by "
                        "process 0 alone); `forgetting-jax predict --rep_dot_encoder=%s` trains it",
                        config.predict.rep_dot_encoder)
        elif config.predict.rep_dot_encoder != "frozen":  # rep_dot's encoder trains for the report
            import functools

            from forgetting_jax.matrix.encoder_inputs import encoder_inputs

            encoder = functools.partial(encoder_inputs, config, workdir)
        summary.report_path, summary.analysis = write_report(
            experiment.directory, experiment.matrix_path, config.name, config.matrix.max_rank, workdir,
            predict=config.predict, encoder=encoder)
        publish_report(summary.report_path, workdir)
        from forgetting_jax.matrix.html_report import write_html_report

        write_html_report(experiment.directory, experiment.matrix_path, config.name, workdir)
    summary.seconds = time.perf_counter() - started
    return summary


def _train_in_groups(config: Experiment, workdir: str, up: Upstream, selected: Sequence[str], redo: Sequence[str],
                     plan, diverged: list[str]) -> list[str]:
    """matrix.parallel_tasks = P > 1: the tasks of `selected` whose rows need a run, fine-tuned P
    at a time (matrix/rows.py compute_group), in order; returns them. The others (finished rows,
    finished runs that kept their model) are left to the one-task path. A task that diverges
    stops its group; with matrix.on_divergence=skip it joins `diverged` and the group goes on
    without it (the others resume from their checkpoints)."""
    from forgetting_jax.train import multitask

    parallel = config.matrix.parallel_tasks
    todo = [matrix_row(up, plan(task)) for task in selected]
    todo = [row for row in todo if needs_training(up, row, row.key in redo)]
    task_mesh = None
    done: list[str] = []
    for start in range(0, len(todo), parallel):
        group = todo[start:start + parallel]
        if task_mesh is None:
            task_mesh = multitask.make_task_mesh(config.mesh, config.matrix.task_submeshes)
        while group:
            log.info("fine-tuning %s together", ", ".join(row.key for row in group))
            try:
                rows = compute_group(config, workdir, up, group, task_mesh, parallel,
                                     [key for key in redo if key not in done])
            except TrainingDiverged as err:
                if config.matrix.on_divergence != "skip":
                    raise
                [failed] = [row for row in group if row.plan.run_dir == err.run_dir]
                log.warning("%s; matrix.on_divergence=skip: the matrix goes on without task %s", err, failed.key)
                diverged.append(failed.key)
                done += [row.key for row in group]  # their runs resume from checkpoints, not from scratch
                group = [row for row in group if row is not failed]
                continue
            for task, ft_nll in rows.items():
                _log_row(task, ft_nll, up.base_nll)
            break
    return [row.key for row in todo if row.key not in diverged]
