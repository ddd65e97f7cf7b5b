"""`forgetting-jax run`: from a config to a finished forgetting matrix, resumably.

  1. the base model (imported or pre-trained; reused when its fingerprint matches);
  2. the N upstream examples, scored once with the base model (cached in the matrix store);
  3. for each of the M tasks: fine-tune (reused when finished), score the upstream examples,
     write the row ft_nll[i] (Z[i] = ft_nll[i] - base_nll), drop the fine-tuned weights unless
     matrix.keep_models;
  4. W/matrix/forgetting.npz from the finished rows, then the analysis and a report.

Kill it at any moment and rerun the same command: finished rows, runs and base scores are reused
by fingerprint, an interrupted fine-tuning run resumes from its latest checkpoint, and the final
matrix equals an uninterrupted run's. Only process 0 writes.
"""

import dataclasses
import logging
import os
import shutil
import time
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from forgetting_jax.data.records import Example
from forgetting_jax.matrix.store import MatrixStore, upstream_fingerprint
from forgetting_jax.models.loading import load_model, load_tokenizer
from forgetting_jax.score.scorer import Scorer
from forgetting_jax.train.mesh import make_mesh
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.run")


@dataclasses.dataclass
class RunSummary:
    """What a pipeline run produced and how much of it was reused."""

    workdir: str
    matrix_path: str
    tasks: list[str]
    num_examples: int
    trained: list[str] = dataclasses.field(default_factory=list)
    reused_rows: list[str] = dataclasses.field(default_factory=list)
    base_scores_reused: bool = False
    seconds: float = 0.0
    report_path: str | None = None
    analysis: dict[str, Any] | None = None


def load_upstream(matrix: Any, tokenizer) -> list[Example]:
    """The upstream examples of `matrix.upstream` (see matrix/settings.py), in a stable order."""
    from forgetting_jax.data.examples import encode_records
    from forgetting_jax.data.splits import subsample

    n = int(matrix.num_upstream) or None
    max_length = int(matrix.max_length)
    kind, path = matrix.upstream, matrix.upstream_path
    if kind == "demo":
        from forgetting_jax.data.demo.corpus import load_demo_upstream

        return load_demo_upstream(tokenizer, max_length, n, int(matrix.seed))
    if not path:
        raise ValueError(f"matrix.upstream={kind!r} needs matrix.upstream_path")
    if kind == "lm":
        from forgetting_jax.data.sources import read_upstream

        records = read_upstream(path, tokenizer=tokenizer, max_length=max_length)
    elif kind == "chat":
        from forgetting_jax.data.readers import read_records

        records = read_records(path, "chat")
    else:
        from forgetting_jax.data.sources import READERS

        if kind not in READERS:
            raise ValueError(f"matrix.upstream {kind!r} is not demo, lm, chat or one of {sorted(READERS)}")
        records = READERS[kind](path)
    return encode_records(tokenizer, subsample(records, n, int(matrix.seed)), max_length, source=path)


def _scoring_mesh(train_mesh: Mesh) -> Mesh | None:
    """Scoring is data-parallel over the training mesh's local devices (None: one device)."""
    devices = [d for d in train_mesh.devices.flat if d.process_index == jax.process_index()]
    return Mesh(np.array(devices), ("data",)) if len(devices) > 1 else None


def _score(model_dir: str, examples: Sequence[Example], matrix: Any, what: str,
           mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
    config, params = load_model(model_dir, param_dtype=matrix.dtype, dtype=matrix.dtype)
    nll, count, stats = Scorer(config, params, mesh=mesh).score([e.pair for e in examples],
                                                       tokens_per_batch=int(matrix.tokens_per_batch))
    log.info("scored %d upstream examples with %s: mean nll %.4f, %.0f tokens/s", len(examples), what,
             float(np.nanmean(nll)), stats.tokens_per_second)
    return nll, count


def _is_main() -> bool:
    return jax.process_index() == 0


def run_pipeline(config: Any, workdir: str, tasks: Sequence[str] | None = None, redo: Sequence[str] = (),
                 analyze: bool = True) -> RunSummary:
    """Builds (or completes) the forgetting matrix of `config` in `workdir`.

    tasks: the subset of config.data.tasks to run (default: all). redo: tasks whose row and
    fine-tuning run are recomputed even when finished.
    """
    from forgetting_jax.train import loop

    started = time.perf_counter()
    matrix = config.matrix
    from forgetting_jax.train.inputs import discover_tasks

    all_tasks = list(config.data.tasks) or discover_tasks(config.data)
    selected = list(tasks) if tasks else all_tasks
    unknown = [t for t in list(selected) + list(redo) if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the config's tasks: {', '.join(all_tasks)}")
    store = MatrixStore(os.path.join(workdir, "matrix"))

    mesh = make_mesh(config.mesh)
    scoring_mesh = _scoring_mesh(mesh)
    base = loop.base_model(config, workdir, mesh)
    tokenizer = load_tokenizer(base.tokenizer_dir)
    upstream = load_upstream(matrix, tokenizer)
    if not upstream:
        raise ValueError("no upstream examples: check matrix.upstream and matrix.upstream_path")
    example_ids = [e.id for e in upstream]
    sources = [e.task for e in upstream]
    up_fp = upstream_fingerprint(example_ids, [e.ids for e in upstream])
    scoring = {"dtype": matrix.dtype, "upstream": up_fp}
    summary = RunSummary(workdir, store.matrix_path, all_tasks, len(upstream))

    base_fp = fingerprint({"base": base.fingerprint, **scoring})
    cached = store.base(base_fp)
    if cached is not None:
        base_nll = cached["nll"]
        summary.base_scores_reused = True
        log.info("base scores of %d upstream examples reused", len(upstream))
    else:
        base_nll, count = _score(base.model_dir, upstream, matrix, "the base model", scoring_mesh)
        store.write_base(base_fp, example_ids, base_nll, count)

    plans = {}
    for position, task in enumerate(selected):
        plan = plans[task] = loop.plan_finetune(config, workdir, task, base)
        row_fp = fingerprint({"run": plan.fingerprint, **scoring})
        if task in redo:
            log.info("task %d/%d: %s: redoing its fine-tuning run and row", position + 1, len(selected), task)
            _remove(store.row_path(task))
            _remove(plan.run_dir)
        elif store.row(task, row_fp) is not None:
            summary.reused_rows.append(task)
            log.info("task %d/%d: %s: row reused", position + 1, len(selected), task)
            continue
        elif plan.finished and not os.path.isdir(os.path.join(plan.run_dir, "model")):
            _remove(plan.run_dir)  # finished before, its weights dropped since: train it again
        log.info("task %d/%d: %s", position + 1, len(selected), task)
        run = loop.finetune(config, workdir, task, base, mesh=mesh)
        ft_nll, _ = _score(run.model_dir, upstream, matrix, f"the model fine-tuned on {task}", scoring_mesh)
        store.write_row(task, row_fp, ft_nll)
        summary.trained.append(task)
        z = ft_nll - base_nll
        log.info("task %s: row written; mean forgetting %+.4f, %.0f%% of upstream examples forgotten", task,
                 float(np.nanmean(z)), 100 * float(np.nanmean(z > 0)))
        if not matrix.keep_models:
            _remove(run.model_dir)

    rows = {}
    for task in all_tasks:
        plan = plans.get(task) or loop.plan_finetune(config, workdir, task, base)
        row = store.row(task, fingerprint({"run": plan.fingerprint, **scoring}))
        if row is not None:
            rows[task] = row
    store.assemble(rows, base_nll, example_ids, sources)
    summary.tasks = list(rows)
    log.info("matrix: %d of %d tasks x %d upstream examples -> %s", len(rows), len(all_tasks), len(upstream),
             store.matrix_path)
    if analyze and rows and _is_main():
        from forgetting_jax.matrix.report import write_report

        summary.report_path, summary.analysis = write_report(workdir, store.matrix_path, config)
    summary.seconds = time.perf_counter() - started
    return summary


def _remove(path: str) -> None:
    """Deletes a file or directory of this pipeline's own making (process 0 only)."""
    if not _is_main() or not os.path.exists(path):
        return
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.remove(path)
