"""`forgetting-jax run`: from a config to a finished forgetting matrix, resumably.

  1. the base model (imported or pre-trained; reused when its fingerprint matches);
  2. the N upstream examples, scored once with the base model (cached in the matrix store);
  3. for each of the M tasks: fine-tune (reused when finished), score the upstream examples,
     write the row ft_nll[i] (Z[i] = ft_nll[i] - base_nll), drop the fine-tuned weights unless
     matrix.keep_models. With matrix.parallel_tasks = P > 1, the next P tasks that need a run
     are fine-tuned at once in one compiled step (train/multitask.py), then scored one by one;
     their fingerprints, files and rows are those of one-at-a-time runs;
  4. W/matrix/forgetting.npz from the finished rows, then the analysis and a report.

Kill it at any moment and rerun the same command: finished rows, runs and base scores are reused
by fingerprint, an interrupted fine-tuning run resumes from its latest checkpoint, and the final
matrix equals an uninterrupted run's. Only process 0 writes.

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
from forgetting_jax.matrix.store import MatrixStore, upstream_fingerprint
from forgetting_jax.models.loading import load_model, load_tokenizer
from forgetting_jax.score.scorer import Scorer, data_mesh
from forgetting_jax.train.distributed import barrier
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
    kwargs = {k: v for k, v in dict(matrix.get("upstream_kwargs") or {}).items() if v is not None}
    if kind == "lm":
        from forgetting_jax.data.sources import read_upstream

        records = read_upstream(path, tokenizer=tokenizer, max_length=max_length, **kwargs)
    elif kind == "chat":
        from forgetting_jax.data.readers import read_records

        records = read_records(path, "chat")
    else:
        from forgetting_jax.data.sources import READERS

        if kind not in READERS:
            raise ValueError(f"matrix.upstream {kind!r} is not demo, lm, chat or one of {sorted(READERS)}")
        reader = READERS[kind]
        accepted = inspect.signature(reader).parameters
        unused = [k for k in kwargs if k not in accepted]
        if unused:
            raise ValueError(f"matrix.upstream_kwargs {', '.join(unused)} do not apply to matrix.upstream={kind!r}")
        records = reader(path, **kwargs)
    return encode_records(tokenizer, subsample(records, n, int(matrix.seed)), max_length, source=path)


def _scoring_mesh(train_mesh: Mesh) -> Mesh | None:
    """Scoring is data-parallel over the training mesh's devices, of every process (None: one
    device); each process feeds and reads back the rows of its own devices."""
    return data_mesh(list(train_mesh.devices.flat))


def score_model(model_dir: str, examples: Sequence[Example], matrix: Any, what: str,
                mesh: Mesh | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL [N], scored tokens [N]) of `examples` under the model in `model_dir` (matrix.dtype)."""
    config, params = load_model(model_dir, param_dtype=matrix.dtype, dtype=matrix.dtype)
    nll, count, stats = Scorer(config, params, mesh=mesh).score([e.pair for e in examples],
                                                       tokens_per_batch=int(matrix.tokens_per_batch))
    log.info("scored %d upstream examples with %s: mean nll %.4f, %.0f tokens/s", len(examples), what,
             float(np.nanmean(nll)), stats.tokens_per_second)
    return nll, count


def _is_main() -> bool:
    return jax.process_index() == 0


@dataclasses.dataclass
class Upstream:
    """The base model and the upstream examples it scored: what every row of the matrix shares."""

    base: Any  # train.loop.BaseModel
    examples: list[Example]
    base_nll: np.ndarray  # [N]
    scoring: dict  # the rows' share of their fingerprints: scoring dtype, upstream set
    store: MatrixStore
    mesh: Mesh
    scoring_mesh: Mesh | None
    base_scores_reused: bool
    task_mesh: Mesh | None = None  # matrix.parallel_tasks > 1: the (task, data, fsdp, tensor) mesh


def prepare_upstream(config: Any, workdir: str, mesh: Mesh | None = None) -> Upstream:
    """The base model (trained or imported when needed) and its scores of the upstream examples
    (computed once, then read from W/matrix/base_nll.npz)."""
    from forgetting_jax.train import loop

    matrix = config.matrix
    store = MatrixStore(os.path.join(workdir, "matrix"))
    mesh = make_mesh(config.mesh) if mesh is None else mesh
    scoring_mesh = _scoring_mesh(mesh)
    base = loop.base_model(config, workdir, mesh)
    tokenizer = load_tokenizer(base.tokenizer_dir)
    upstream = load_upstream(matrix, tokenizer)
    if not upstream:
        raise ValueError("no upstream examples: check matrix.upstream and matrix.upstream_path")
    example_ids = [e.id for e in upstream]
    up_fp = upstream_fingerprint(example_ids, [e.ids for e in upstream])
    scoring = {"dtype": matrix.dtype, "upstream": up_fp}
    base_fp = fingerprint({"base": base.fingerprint, **scoring})
    cached = store.base(base_fp, len(upstream))
    if cached is not None:
        log.info("base scores of %d upstream examples reused", len(upstream))
        base_nll = cached["nll"]
    else:
        _check_base_model(base)
        base_nll, count = score_model(base.model_dir, upstream, matrix, "the base model", scoring_mesh)
        store.write_base(base_fp, example_ids, base_nll, count)
    return Upstream(base, upstream, base_nll, scoring, store, mesh, scoring_mesh, cached is not None)


def scored_run(config: Any, workdir: str, up: Upstream, task: str, examples: Sequence[Example], store: MatrixStore,
               key: str, scoring: dict, plan: Any | None = None, mixture: Any | None = None, redo: bool = False
               ) -> tuple[np.ndarray, bool]:
    """(mean NLL [n] of `examples` after fine-tuning on `task`, reused): read from `store` under
    `key` when the fingerprint (the run's and `scoring`) matches; else fine-tune (with `mixture`;
    a finished run that kept its model is reused), score and write them. redo: recompute both."""
    from forgetting_jax.train import loop

    plan = plan or loop.plan_finetune(config, workdir, task, up.base, mixture)
    fp = fingerprint({"run": plan.fingerprint, **scoring})
    if redo:
        _remove(store.row_path(key))
        _remove(plan.run_dir)
    else:
        row = store.row(key, fp, len(examples))
        if row is not None:
            return row, True
        if plan.finished and not _has_model(plan.run_dir):
            _remove(plan.run_dir)  # finished before, its weights dropped (or damaged) since: train it again
    run = loop.finetune(config, workdir, task, up.base, mesh=up.mesh, mixture=mixture)
    what = f"the model fine-tuned on {task}" + ("" if mixture is None else f" ({mixture.label})")
    nll, _ = score_model(run.model_dir, examples, config.matrix, what, up.scoring_mesh)
    store.write_row(key, fp, nll)
    if not config.matrix.keep_models:
        _remove(run.model_dir)
    return nll, False


def task_row(config: Any, workdir: str, up: Upstream, task: str, plan: Any | None = None,
             redo: bool = False) -> tuple[np.ndarray, bool]:
    """(ft_nll [N], reused) of `task`: its finished row, or fine-tune (reusing a finished run that
    kept its model), score the upstream examples and write the row. redo: recompute both."""
    ft_nll, reused = scored_run(config, workdir, up, task, up.examples, up.store, task, up.scoring, plan, redo=redo)
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
    from forgetting_jax.train import loop

    from forgetting_jax.train.inputs import discover_tasks

    started = time.perf_counter()

    all_tasks = list(config.data.tasks) or discover_tasks(config.data)
    selected = list(tasks) if tasks else all_tasks
    unknown = [t for t in list(selected) + list(redo) if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; the config's tasks: {', '.join(all_tasks)}")

    up = upstream or prepare_upstream(config, workdir)
    store, upstream = up.store, up.examples
    summary = RunSummary(workdir, store.matrix_path, all_tasks, len(upstream),
                         base_scores_reused=up.base_scores_reused)

    plans = {}
    parallel = int(config.matrix.get("parallel_tasks", 1) or 1)
    trained_ahead: set[str] = set()
    for position, task in enumerate(selected):
        if parallel > 1 and task not in trained_ahead:
            trained_ahead |= _train_ahead(config, workdir, up, selected[position:], redo, plans, parallel)
        plan = plans[task] = plans.get(task) or loop.plan_finetune(config, workdir, task, up.base)
        what = f"task {position + 1}/{len(selected)}: {task}"
        log.info("%s%s", what, ": redoing its fine-tuning run and row" if task in redo else "")
        _, reused = task_row(config, workdir, up, task, plan, redo=task in redo and task not in trained_ahead)
        if reused:
            summary.reused_rows.append(task)
            log.info("%s: row reused", what)
        else:
            summary.trained.append(task)

    barrier("rows written")  # process 0 wrote the rows that every process reads next
    rows = {}
    for task in all_tasks:
        plan = plans.get(task) or loop.plan_finetune(config, workdir, task, up.base)
        row = store.row(task, fingerprint({"run": plan.fingerprint, **up.scoring}), len(upstream))
        if row is not None:
            rows[task] = row
    store.assemble(rows, up.base_nll, [e.id for e in upstream], [e.task for e in upstream])
    summary.tasks = list(rows)
    log.info("matrix: %d of %d tasks x %d upstream examples -> %s", len(rows), len(all_tasks), len(upstream),
             store.matrix_path)
    if analyze and rows and _is_main():
        from forgetting_jax.matrix.report import write_report

        summary.report_path, summary.analysis = write_report(workdir, store.matrix_path, config)
    summary.seconds = time.perf_counter() - started
    return summary


def _train_ahead(config: Any, workdir: str, up: Upstream, candidates: Sequence[str], redo: Sequence[str],
                 plans: dict, parallel: int) -> set[str]:
    """matrix.parallel_tasks > 1: fine-tunes the next `parallel` tasks of `candidates` that need a
    run, all at once (train/multitask.py); their rows are then scored one by one as usual, from the
    finished runs. Returns the tasks this looked at (they need no second look)."""
    from forgetting_jax.train import loop, multitask

    group, seen = [], set()
    for task in candidates:
        plan = plans[task] = plans.get(task) or loop.plan_finetune(config, workdir, task, up.base)
        seen.add(task)
        has_model = plan.finished and _has_model(plan.run_dir)
        if task in redo:
            _remove(up.store.row_path(task))
            _remove(plan.run_dir)
        elif up.store.row(task, fingerprint({"run": plan.fingerprint, **up.scoring}),
                          len(up.examples)) is not None or has_model:
            continue
        elif plan.finished:
            _remove(plan.run_dir)  # finished before, its weights dropped since: train it again
        group.append(task)
        if len(group) == parallel:
            break
    if group:
        if up.task_mesh is None:
            up.task_mesh = multitask.make_task_mesh(config.mesh, int(config.matrix.get("task_submeshes", 1) or 1))
        log.info("fine-tuning %s together", ", ".join(group))
        multitask.finetune_group(config, workdir, group, up.base, up.task_mesh, parallel)
    return seen


def _remove(path: str) -> None:
    """Deletes a file or directory of this pipeline's own making (process 0 only)."""
    if not _is_main() or not os.path.exists(path):
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
    if _is_main():
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
