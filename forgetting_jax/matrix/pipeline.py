"""`forgetting-jax run`: from a config to a finished forgetting matrix, resumably.

  1. the base model (imported or pre-trained; reused when its fingerprint matches);
  2. the N upstream examples, scored once with the base model (cached in the matrix store);
  3. for each of the M tasks: fine-tune (reused when finished), score the upstream examples with
     the fine-tuned parameters where they sit on the mesh (no export and reload; the weights are
     exported to the run's model/ only with matrix.keep_models), write the row ft_nll[i]
     (Z[i] = ft_nll[i] - base_nll). With matrix.parallel_tasks = P > 1, the next P tasks that
     need a run are fine-tuned at once in one compiled step (train/multitask.py), then scored
     one by one; their fingerprints, files and rows are those of one-at-a-time runs. Each
     task's data is read and tokenized once per run;
  4. the experiment's matrix W/experiments/<name>/forgetting.npz from the finished rows, then its
     analysis/ and report.md there (matrix/experiments.py), and copies of the matrix and report
     at W/matrix/forgetting.npz and W/report.md (the most recent run's).

Base scores (W/matrix/base_nll/<fp>.npz) and rows (W/matrix/rows/<task>/<fp>.npz) are keyed by
their fingerprints, so experiments sharing a workspace never overwrite each other's: switching
back to an earlier config retrains and rescores nothing. Kill it at any moment and rerun the same
command: finished rows, runs and base scores are reused by fingerprint, an interrupted fine-tuning
run resumes from its latest checkpoint, and the final matrix equals an uninterrupted run's. Only
process 0 writes.

A damaged workspace file is never fatal: a truncated or malformed row or base-score file is moved
aside (`<name>.damaged-<timestamp>`, matrix/store.py) and recomputed; a finished run whose exported
model cannot be read is trained again; a checkpoint step that cannot be restored falls back to
the previous step (train/checkpoints.py). Each with a warning naming the file.
"""

import dataclasses
import inspect
import json
import logging
import os
import shutil
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from forgetting_jax.data.records import Example
from forgetting_jax.experiment import as_experiment
from forgetting_jax.matrix.experiments import (experiment_fingerprint, publish_matrix, publish_report,
                                               record_experiment, resolve_experiment)
from forgetting_jax.matrix.store import MatrixStore, upstream_fingerprint
from forgetting_jax.models.config import ModelConfig
from forgetting_jax.models.loading import load_model
from forgetting_jax.score.scorer import Scorer, data_mesh
from forgetting_jax.train.base import tokenizer as cached_tokenizer
from forgetting_jax.utils.runtime import barrier, is_main
from forgetting_jax.train.mesh import make_mesh
from forgetting_jax.utils.fingerprint import fingerprint

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


_UPSTREAM: dict[tuple, tuple[list[Example], list[dict]]] = {}  # _upstream_cached's results in this process


def load_upstream(matrix: Any, tokenizer) -> list[Example]:
    """The upstream examples of `matrix.upstream`, read and tokenized once per process for the same
    settings, tokenizer and file (its size and modification time): a reused `run`, `replay` or
    the next command of one process does not read them again."""
    return list(_upstream_cached(matrix, tokenizer)[0])


def load_upstream_records(matrix: Any, tokenizer) -> list[dict]:
    """The records of `load_upstream`'s examples, one each in the same order (their prompts and
    reference answers: the exact-match metric, matrix/answers.py)."""
    return list(_upstream_cached(matrix, tokenizer)[1])


def _upstream_cached(matrix: Any, tokenizer) -> tuple[list[Example], list[dict]]:
    path = matrix.upstream_path
    stamp = (os.path.getsize(path), os.stat(path).st_mtime_ns) if path and os.path.isfile(path) else None
    key = (repr(matrix), getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer), stamp)
    if key not in _UPSTREAM:
        _UPSTREAM.clear()  # one upstream set at a time: a run holds one
        _UPSTREAM[key] = _read_upstream(matrix, tokenizer)
    return _UPSTREAM[key]


def _read_upstream(matrix: Any, tokenizer) -> tuple[list[Example], list[dict]]:
    """The upstream examples of `matrix.upstream` (experiment.MatrixSettings), in a stable order,
    and their records."""
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.splits import subsample

    n = int(matrix.num_upstream) or None
    max_length = int(matrix.max_length)
    kind, path = matrix.upstream, matrix.upstream_path
    if kind == "demo":
        from forgetting_jax.data.demo import corpus_path
        from forgetting_jax.data.demo.corpus import demo_upstream_records

        records = demo_upstream_records(tokenizer, max_length, n, int(matrix.seed))
        return encode_records(tokenizer, records, max_length, source=corpus_path()), records
    if kind == "demo_tasks":
        from forgetting_jax.data.demo.tasks import suite_records

        if not matrix.upstream_tasks:
            raise ValueError("matrix.upstream=demo_tasks needs matrix.upstream_tasks (tasks of the bundled suite)")
        records = subsample(suite_records(matrix.upstream_tasks, "train"), n, int(matrix.seed))
        return encode_records(tokenizer, records, max_length, source="the demo task suite"), records
    if not path:
        raise ValueError(f"matrix.upstream={kind!r} needs matrix.upstream_path")
    kwargs = {k: v for k, v in dict(matrix.upstream_kwargs or {}).items() if v is not None}
    if kind == "lm":
        from forgetting_jax.data.sources import read_upstream

        records = read_upstream(path, tokenizer=tokenizer, max_length=max_length, **kwargs)
    elif kind == "chat":
        from forgetting_jax.data.readers import read_records

        records = read_records(path, "chat")
    else:
        from forgetting_jax.data.sources import READERS

        if kind not in READERS:
            raise ValueError(f"matrix.upstream {kind!r} is not demo, demo_tasks, lm, chat or one of {sorted(READERS)}")
        reader = READERS[kind]
        accepted = inspect.signature(reader).parameters
        unused = [k for k in kwargs if k not in accepted]
        if unused:
            raise ValueError(f"matrix.upstream_kwargs {', '.join(unused)} do not apply to matrix.upstream={kind!r}")
        records = reader(path, **kwargs)
    records = subsample(records, n, int(matrix.seed))
    return encode_records(tokenizer, records, max_length, source=path), records


def _scoring_mesh(train_mesh: Mesh) -> Mesh | None:
    """Scoring is data-parallel over the training mesh's devices, of every process (None: one
    device); each process feeds and reads back the rows of its own devices."""
    return data_mesh(list(train_mesh.devices.flat))


def score_params(config: ModelConfig, params: Any, examples: Sequence[Example], matrix: Any, what: str,
                 mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL [N], scored tokens [N]) of `examples` under `params` (host or device arrays, cast
    to config.param_dtype = matrix.dtype)."""
    nll, count, stats = Scorer(config, params, mesh=mesh).score([e.pair for e in examples],
                                                       tokens_per_batch=int(matrix.tokens_per_batch))
    log.info("scored %d upstream examples with %s: mean nll %.4f, %.0f tokens/s", len(examples), what,
             float(np.nanmean(nll)), stats.tokens_per_second)
    return nll, count


def score_run(up: "Upstream", run: Any, examples: Sequence[Example], config: Any, what: str, key: str = "",
              row_fp: str | None = None) -> np.ndarray:
    """Mean NLL [n] of `examples` under a fine-tuned model: its parameters where they sit on the
    mesh (a run just trained), else its exported model/ (a finished run that kept it). The weights
    are rounded to train.export_dtype first, when set, as an export would store them. row_fp: also
    answer the upstream prompts with it and store the answers of `key` (matrix.metric=exact_match)."""
    if run.params is None:
        _, params = load_model(run.model_dir, param_dtype=config.matrix.dtype, dtype=config.matrix.dtype)
    else:
        export_dtype = config.train.export_dtype
        params = run.params if not export_dtype else jax.tree.map(lambda x: x.astype(export_dtype), run.params)
    nll = score_params(up.scoring_config, params, examples, config.matrix, what, up.scoring_mesh)[0]
    if row_fp is not None:
        from forgetting_jax.matrix.answers import answer, answers_fingerprint

        correct, completions = answer(up.scoring_config, params, up.answers, up.tokenizer, up.eos_ids,
                                      up.scoring_mesh, up.generate_batch_size, what)
        up.answer_store.write(key, answers_fingerprint(row_fp, up.answers), correct, completions)
        dropped = up.base_correct & ~correct
        log.info("task %s: %d of %d answers the base model got right are now wrong (%.1f%%)", key,
                 int(dropped.sum()), int(up.base_correct.sum()),
                 100 * float(dropped.sum()) / max(int(up.base_correct.sum()), 1))
    return nll


@dataclasses.dataclass
class Upstream:
    """The base model and the upstream examples it scored: what every row of the matrix shares."""

    base: Any  # train.base.BaseModel
    examples: list[Example]
    base_nll: np.ndarray  # [N]
    scoring: dict  # the rows' share of their fingerprints: scoring dtype, upstream set
    store: MatrixStore
    mesh: Mesh
    scoring_mesh: Mesh | None
    base_scores_reused: bool
    scoring_config: ModelConfig | None = None  # the base's architecture in matrix.dtype: every model scored
    task_mesh: Mesh | None = None  # matrix.parallel_tasks > 1: the (task, data, fsdp, tensor) mesh
    base_scores_fp: str = ""  # the fingerprint of the base scores (of base_nll)
    tokens_per_batch: int = 16384  # matrix.tokens_per_batch: token slots per scoring call
    base_scorer: Any = None  # the base weights while representations are computed (matrix/representations.py)
    answers: Any = None  # matrix.metric=exact_match: the AnswerSet (matrix/answers.py), else None
    answer_store: Any = None  # its AnswerStore
    base_correct: np.ndarray | None = None  # [N] bool: the base model's answers are right
    tokenizer: Any = None  # the base's tokenizer (prompts and answers)
    eos_ids: tuple[int, ...] = ()  # the token ids that end an answer
    generate_batch_size: int = 64


def prepare_upstream(config: Any, workdir: str, mesh: Mesh | None = None) -> Upstream:
    """The base model (trained or imported when needed) and its scores of the upstream examples
    (computed once, then read from W/matrix/base_nll/<fp>.npz)."""
    from forgetting_jax.train.base import base_model

    config = as_experiment(config)
    matrix = config.matrix
    store = MatrixStore(os.path.join(workdir, "matrix"))
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    scoring_mesh = _scoring_mesh(mesh)
    base = base_model(config, workdir, mesh)
    # Every model of the matrix is scored with this one config (one compiled scoring step).
    scoring_config = base.config.replace(param_dtype=matrix.dtype, dtype=matrix.dtype, remat_policy="none")
    tokenizer = cached_tokenizer(base.tokenizer_dir)
    upstream = load_upstream(matrix, tokenizer)
    if not upstream:
        raise ValueError("no upstream examples: check matrix.upstream and matrix.upstream_path")
    example_ids = [e.id for e in upstream]
    up_fp = upstream_fingerprint(example_ids, [e.ids for e in upstream])
    scoring = {"dtype": matrix.dtype, "upstream": up_fp}
    base_fp = fingerprint({"base": base.fingerprint, **scoring})
    cached = store.base(base_fp, len(upstream))
    up = Upstream(base, upstream, np.zeros(0, np.float32), scoring, store, mesh, scoring_mesh, cached is not None,
                  scoring_config=scoring_config, base_scores_fp=base_fp, tokens_per_batch=int(matrix.tokens_per_batch))
    reps = None
    if matrix.representations:
        from forgetting_jax.matrix import representations

        reps = representations.RepresentationStore(store.root)
        reps_fp = representations.upstream_fingerprint(up)
    if cached is not None:
        log.info("base scores of %d upstream examples reused", len(upstream))
        up.base_nll = cached["nll"]
    else:
        _check_base_model(base)
        _, params = load_model(base.model_dir, param_dtype=matrix.dtype, dtype=matrix.dtype)
        scorer = Scorer(scoring_config, params, mesh=scoring_mesh)
        pairs = [e.pair for e in upstream]
        if reps is not None and reps.upstream(reps_fp, len(upstream)) is None:
            # the base scores and the representations from the same packed batches, one forward pass
            up.base_nll, count, mean, last, stats = scorer.score_and_represent(pairs, tokens_per_batch=up.tokens_per_batch)
            reps.write_upstream(reps_fp, mean, last)
            reps = None  # done: every process holds them (no process re-reads a file process 0 may still be writing)
        else:
            up.base_nll, count, stats = scorer.score(pairs, tokens_per_batch=up.tokens_per_batch)
        log.info("scored %d upstream examples with the base model: mean nll %.4f, %.0f tokens/s", len(upstream),
                 float(np.nanmean(up.base_nll)), stats.tokens_per_second)
        store.write_base(base_fp, example_ids, up.base_nll, count)
        up.base_scorer = scorer  # for the representations below: no second read of the weights
    if matrix.metric == "exact_match":
        _base_answers(up, matrix, tokenizer)
    if reps is not None:
        representations.upstream_representation(up)  # read from the cache, or computed now
    up.base_scorer = None  # not held while tasks fine-tune
    return up


def _base_answers(up: Upstream, matrix: Any, tokenizer) -> None:
    """matrix.metric=exact_match: the answer set, and the base model's answers (read from the
    answer store, or generated now)."""
    from forgetting_jax.matrix.answers import BASE, AnswerStore, answer, answer_set, answers_fingerprint
    from forgetting_jax.models.generate import eos_token_ids

    if jax.process_count() > 1:
        raise ValueError("matrix.metric=exact_match runs in one process (one host, any number of its devices); "
                         f"this run has {jax.process_count()} processes")
    up.answers = answer_set(matrix, tokenizer, load_upstream_records(matrix, tokenizer))
    up.answer_store = AnswerStore(up.store.root)
    up.tokenizer = tokenizer
    up.eos_ids = tuple(eos_token_ids(up.scoring_config, tokenizer, up.base.model_dir))
    up.generate_batch_size = int(matrix.generate_batch_size)
    fp = answers_fingerprint(up.base_scores_fp, up.answers)
    up.base_correct = up.answer_store.read(BASE, fp, len(up.examples))
    if up.base_correct is not None:
        log.info("base model's answers to %d upstream prompts reused: %.1f%% right", len(up.examples),
                 100 * float(up.base_correct.mean()))
        return
    if up.base_scorer is not None:
        params = up.base_scorer.params
    else:
        _check_base_model(up.base)
        _, params = load_model(up.base.model_dir, param_dtype=matrix.dtype, dtype=matrix.dtype)
    correct, completions = answer(up.scoring_config, params, up.answers, tokenizer, up.eos_ids, up.scoring_mesh,
                                  up.generate_batch_size, "the base model")
    up.answer_store.write(BASE, fp, correct, completions)
    up.base_correct = correct


def scored_run(config: Any, workdir: str, up: Upstream, task: str, examples: Sequence[Example], store: MatrixStore,
               key: str, scoring: dict, plan: Any | None = None, mixture: Any | None = None, redo: bool = False,
               answers: bool = False) -> tuple[np.ndarray, bool]:
    """(mean NLL [n] of `examples` after fine-tuning on `task`, reused): read from `store` under
    `key` when the fingerprint (the run's and `scoring`) matches; else fine-tune (with `mixture`;
    a finished run that kept its model is reused), score and write them. redo: recompute both.
    answers: also the fine-tuned model's answers to the upstream prompts (matrix.metric=exact_match),
    reused or written likewise (the row counts as finished when both are stored).
    The fine-tuned weights are scored where they sit on the mesh; they are exported (model/) only
    with matrix.keep_models."""
    from forgetting_jax.train.finetune import finetune, plan_finetune

    config = as_experiment(config)
    plan = plan or plan_finetune(config, workdir, task, up.base, mixture)
    fp = row_fingerprint(plan, scoring)
    if redo:
        _remove(store.row_path(key, fp))
        _remove(plan.run_dir)
    else:
        row = store.row(key, fp, len(examples))
        if row is not None and (not answers or _stored_answers(up, key, fp) is not None):
            return row, True
        if plan.finished and not _has_model(plan.run_dir):
            _remove(plan.run_dir)  # finished before, its weights dropped (or damaged) since: train it again
    keep = bool(config.matrix.keep_models)
    run = finetune(config, workdir, task, up.base, mesh=up.mesh, mixture=mixture, plan=plan, export=keep)
    what = f"the model fine-tuned on {task}" + ("" if mixture is None else f" ({mixture.label})")
    nll = score_run(up, run, examples, config, what, key=key, row_fp=fp if answers else None)
    store.write_row(key, fp, nll)
    if not keep and run.model_dir is not None:
        _remove(run.model_dir)  # kept by an earlier experiment; this one does not keep models
    return nll, False


def _stored_answers(up: Upstream, task: str, row_fp: str) -> np.ndarray | None:
    """correct [N] of the model of row `row_fp` of `task` when its answers are stored, else None."""
    from forgetting_jax.matrix.answers import answers_fingerprint

    return up.answer_store.read(task, answers_fingerprint(row_fp, up.answers), len(up.examples))


def row_fingerprint(plan: Any, scoring: dict) -> str:
    """The fingerprint of a row: its fine-tuning run's (`plan.fingerprint`) and the scoring's."""
    return fingerprint({"run": plan.fingerprint, **scoring})


def task_row(config: Any, workdir: str, up: Upstream, task: str, plan: Any | None = None,
             redo: bool = False) -> tuple[np.ndarray, bool]:
    """(ft_nll [N], reused) of `task`: its finished row, or fine-tune (reusing a finished run that
    kept its model), score the upstream examples and write the row. redo: recompute both."""
    ft_nll, reused = scored_run(config, workdir, up, task, up.examples, up.store, task, up.scoring, plan, redo=redo,
                                answers=up.answers is not None)
    if not reused:
        z = ft_nll - up.base_nll
        log.info("task %s: row written; mean forgetting %+.4f, %.0f%% of upstream examples forgotten", task,
                 float(np.nanmean(z)), 100 * float(np.nanmean(z > 0)))
    return ft_nll, reused


def run_pipeline(config: Any, workdir: str, tasks: Sequence[str] | None = None, redo: Sequence[str] = (),
                 analyze: bool = True, upstream: Upstream | None = None) -> RunSummary:
    """Builds (or completes) the forgetting matrix of `config` in `workdir`.

    tasks: the subset of config.data.tasks to run (default: all). redo: tasks whose row and
    fine-tuning run are recomputed even when finished. upstream: `prepare_upstream`'s result when
    the caller has it already.
    """
    from forgetting_jax.train.finetune import plan_finetune
    from forgetting_jax.train.inputs import discover_tasks

    started = time.perf_counter()
    config = as_experiment(config)

    all_tasks = list(config.data.tasks) or discover_tasks(config.data)
    selected = list(tasks) if tasks else all_tasks
    unknown = [t for t in list(selected) + list(redo) if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the config's tasks: {', '.join(all_tasks)}")

    up = upstream or prepare_upstream(config, workdir)
    store, upstream = up.store, up.examples
    summary = RunSummary(workdir, "", all_tasks, len(upstream), base_scores_reused=up.base_scores_reused,
                         metric=config.matrix.metric)

    plans: dict = {}  # {task: FinetunePlan}: each task's data is read and tokenized once
    parallel = config.matrix.parallel_tasks
    looked_at: set[str] = set()
    trained_ahead: set[str] = set()
    for position, task in enumerate(selected):
        if parallel > 1 and task not in looked_at:
            looked, trained = _train_ahead(config, workdir, up, selected[position:], redo, plans, parallel)
            looked_at |= looked
            trained_ahead |= trained
        plan = plans[task] = plans.get(task) or plan_finetune(config, workdir, task, up.base)
        what = f"task {position + 1}/{len(selected)}: {task}"
        if task in trained_ahead:
            summary.trained.append(task)
            continue
        log.info("%s%s", what, ": redoing its fine-tuning run and row" if task in redo else "")
        _, reused = task_row(config, workdir, up, task, plan, redo=task in redo and task not in looked_at)
        if reused:
            summary.reused_rows.append(task)
            log.info("%s: row reused", what)
        else:
            summary.trained.append(task)

    barrier("rows written")  # process 0 wrote the rows that every process reads next
    for task in all_tasks:  # every task's plan (its data read once), for the fingerprints and representations
        plans[task] = plans.get(task) or plan_finetune(config, workdir, task, up.base)
    row_fps = {task: row_fingerprint(plans[task], up.scoring) for task in all_tasks}
    experiment = resolve_experiment(workdir, config.name, experiment_fingerprint(row_fps, up.base_scores_fp))
    rows = finished_rows(store, row_fps, len(upstream))
    if up.answers is not None:
        from forgetting_jax.matrix.answers import matrix_arrays

        correct_after = {task: _stored_answers(up, task, row_fps[task]) for task in rows}
        rows = {task: row for task, row in rows.items() if correct_after[task] is not None}
    record_experiment(experiment, config.name, row_fps, up.base_scores_fp)
    extras = matrix_representations(config, up, list(rows), plans) if config.matrix.representations else {}
    if up.answers is not None:
        extras.update(matrix_arrays(up.base_correct, correct_after, list(rows)))
    store.assemble(rows, up.base_nll, [e.id for e in upstream], [e.task for e in upstream], experiment.matrix_path,
                   extras=extras)
    publish_matrix(experiment, workdir)
    barrier("matrix written")  # every process may read the matrix next (replay)
    summary.matrix_path, summary.experiment_dir, summary.tasks = experiment.matrix_path, experiment.directory, list(rows)
    log.info("matrix: %d of %d tasks x %d upstream examples -> %s (the most recent run's copy: %s)", len(rows),
             len(all_tasks), len(upstream), experiment.matrix_path, store.matrix_path)
    if analyze and rows and is_main():
        from forgetting_jax.matrix.report import write_report

        summary.report_path, summary.analysis = write_report(
            experiment.directory, experiment.matrix_path, config.name, config.matrix.max_rank, workdir,
            predict=config.predict)
        publish_report(summary.report_path, workdir)
    summary.seconds = time.perf_counter() - started
    return summary


def matrix_representations(config: Any, up: Upstream, tasks: Sequence[str], plans: dict) -> dict[str, np.ndarray]:
    """The representation arrays of the matrix file for its rows `tasks` ({task: FinetunePlan} in
    `plans`), computed once and cached by fingerprint (matrix/representations.py); the base
    weights are released afterwards."""
    from forgetting_jax.matrix.representations import matrix_arrays

    train = {task: plans[task].examples["train"] for task in tasks}
    try:
        return matrix_arrays(up, tasks, train, int(config.matrix.task_examples))
    finally:
        up.base_scorer = None


def finished_rows(store: MatrixStore, row_fps: dict[str, str], n: int) -> dict[str, np.ndarray]:
    """{task: ft_nll [n]} of the tasks of `row_fps` ({task: row fingerprint}) whose row is stored."""
    rows = {}
    for task, fp in row_fps.items():
        row = store.row(task, fp, n)
        if row is not None:
            rows[task] = row
    return rows


def _train_ahead(config: Any, workdir: str, up: Upstream, candidates: Sequence[str], redo: Sequence[str],
                 plans: dict, parallel: int) -> tuple[set[str], set[str]]:
    """matrix.parallel_tasks > 1: fine-tunes the next `parallel` tasks of `candidates` that need a
    run, all at once (train/multitask.py), then scores each one's parameters where they sit and
    writes its row. Returns (the tasks this looked at: they need no second look, the tasks it
    trained and scored)."""
    from forgetting_jax.train import multitask
    from forgetting_jax.train.finetune import finetune_group, plan_finetune

    group, seen = [], set()
    for task in candidates:
        plan = plans[task] = plans.get(task) or plan_finetune(config, workdir, task, up.base)
        seen.add(task)
        has_model = plan.finished and _has_model(plan.run_dir)
        fp = row_fingerprint(plan, up.scoring)
        if task in redo:
            _remove(up.store.row_path(task, fp))
            _remove(plan.run_dir)
        elif has_model or (up.store.row(task, fp, len(up.examples)) is not None
                           and (up.answers is None or _stored_answers(up, task, fp) is not None)):
            continue
        elif plan.finished:
            _remove(plan.run_dir)  # finished before, its weights dropped since: train it again
        group.append(task)
        if len(group) == parallel:
            break
    if not group:
        return seen, set()
    if up.task_mesh is None:
        up.task_mesh = multitask.make_task_mesh(config.mesh, config.matrix.task_submeshes)
    log.info("fine-tuning %s together", ", ".join(group))
    keep = bool(config.matrix.keep_models)
    runs = finetune_group(config, workdir, group, up.base, up.task_mesh, parallel, plans=plans, export=keep)
    for run in runs:
        fp = row_fingerprint(plans[run.task], up.scoring)
        nll = score_run(up, run, up.examples, config, f"the model fine-tuned on {run.task}", key=run.task,
                        row_fp=fp if up.answers is not None else None)
        up.store.write_row(run.task, fp, nll)
        z = nll - up.base_nll
        log.info("task %s: row written; mean forgetting %+.4f, %.0f%% of upstream examples forgotten", run.task,
                 float(np.nanmean(z)), 100 * float(np.nanmean(z > 0)))
    return seen, set(group)


def _remove(path: str) -> None:
    """Deletes a file or directory of this pipeline's own making (process 0 only)."""
    if not is_main() or not os.path.exists(path):
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.remove(path)


def model_problem(model_dir: str) -> str | None:
    """Why the HF directory `model_dir` (an export of this pipeline) cannot be loaded, or None:
    config.json missing or not JSON, weights missing, a safetensors file that does not open (a
    truncated file fails its header check)."""
    from safetensors import safe_open

    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"config.json: {type(err).__name__}: {err}"
    index = os.path.join(model_dir, "model.safetensors.index.json")
    try:
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        for name in files:
            path = os.path.join(model_dir, name)
            if not os.path.isfile(path):
                return f"{name} is missing"
            with safe_open(path, framework="numpy") as handle:
                handle.keys()
    except Exception as err:  # OSError, ValueError, KeyError, SafetensorError
        return f"{type(err).__name__}: {err}"
    return None


def _has_model(run_dir: str) -> bool:
    """True when the finished run in `run_dir` kept a loadable model/; a damaged one is moved aside
    (process 0) with a warning, so that the run is trained and exported again."""
    model_dir = os.path.join(run_dir, "model")
    if not os.path.isdir(model_dir):
        return False
    problem = model_problem(model_dir)
    if problem is None:
        return True
    log.warning("%s is damaged (%s); training that run again", model_dir, problem)
    if is_main():
        shutil.rmtree(model_dir, ignore_errors=True)
    return False


def _check_base_model(base: Any) -> None:
    """A clear error (not a traceback from the loader) when a pre-trained base's model/ cannot be read."""
    if base.model_dir != os.path.join(base.directory, "model"):
        return  # an imported base: the user's own directory, checked by its fingerprint
    problem = model_problem(base.model_dir) if os.path.isdir(base.model_dir) else "it is missing"
    if problem is not None:
        raise ValueError(f"the base model {base.model_dir} is damaged ({problem}); delete {base.directory} and "
                         "run again to pre-train it again (the same settings give the same base)")
