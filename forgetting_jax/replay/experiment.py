"""`forgetting-jax replay`: does replaying the examples predicted to be forgotten prevent forgetting?

  1. the forgetting matrix of config.data.tasks (built or reused by the `run` pipeline; the
     experiment's own W/experiments/<name>/forgetting.npz): its rows train the prediction;
  2. a held-out set that is never replayed and only measures forgetting (replay/heldout.py: a
     seeded split of the upstream examples, the rest being the replay pool, or
     replay.heldout_file); its size and the runs' steps and kept step follow replay.protocol
     (replay/protocol.py: final, the paper's final code, or project);
  3. per test task (replay.test_tasks, none of them a row of the matrix): the plain fine-tuning
     run and its full row of the upstream examples (the matrix store's row
     W/matrix/rows/<task>/<fp>.npz: the "none" strategy and the ground truth), k observed entries
     of that row for the predictions;
  4. per test task and strategy: a fine-tuning run with replay (train/finetune.py with a
     replay/mixture.py mixture; fingerprinted and reused like any run), scored on the held-out set
     (W/replay/heldout/rows/<task>.<strategy>/<fp>.npz) and, with matrix.metric=exact_match,
     answering its prompts; final: floor(train.steps (1 + r)) optimizer steps, project:
     train.steps (replayed examples take a share r / (1 + r) of the batch slots) or
     ceil(train.steps (1 + r)) with replay.scale_steps;
  5. the experiment's replay/results.json, table and figure (W/experiments/<name>/replay/),
     rebuilt from the finished runs' scores, and a section of its report.md; copies of them at
     W/replay/ and W/report.md (the most recent command's).

Forgetting of a run = the mean over held-out examples of NLL after - NLL of the base model; with
matrix.metric=exact_match also its exact-match drop: the share of the held-out examples the base
model answers right that the run's model answers wrong.
"""

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Sequence

import numpy as np

from forgetting_jax.experiment import Experiment
from forgetting_jax.matrix.rows import RowPlan, get_or_compute, matrix_row
from forgetting_jax.matrix.run import run_pipeline
from forgetting_jax.matrix.upstream import Upstream, prepare_upstream
from forgetting_jax.matrix.representations import MATRIX_ARRAYS as REPRESENTATION_ARRAYS
from forgetting_jax.predict.comparison import rep_dot_config
from forgetting_jax.predict.methods import CompletionConfig
from forgetting_jax.replay import baselines
from forgetting_jax.replay.heldout import HeldOut, em_drop, heldout_set
from forgetting_jax.replay.mixture import ReplayMixture, replay_fraction, replay_positions
from forgetting_jax.replay.protocol import Protocol, protocol as replay_protocol
from forgetting_jax.replay.results import summarize
from forgetting_jax.replay.sampler import FixedSchedule, ReplaySchedule, replay_logits
from forgetting_jax.replay.strategies import (Completer, OnlineSchedule, Strategy, observed_columns, parse_strategy,
                                              task_code)
from forgetting_jax.replay.weights_file import read_weights, weight_logits, weights_path
from forgetting_jax.train.finetune import plan_finetune
from forgetting_jax.train.mesh import make_mesh
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.replay")


@dataclasses.dataclass
class Setup:
    """What every replay run of one experiment shares."""

    config: Experiment  # as the runs are planned (replay/protocol.py run_config)
    up: Upstream
    z_train_MxN: np.ndarray  # the matrix's rows
    pool_N: np.ndarray  # bool: may be replayed
    heldout: HeldOut | None
    completer: Completer | None
    protocol: Protocol | None = None  # None: the config's

    def __post_init__(self):
        if self.protocol is None:
            object.__setattr__(self, "protocol", replay_protocol(self.config))

    def replay_steps(self) -> int:
        return self.protocol.replay_steps(int(self.config.train.steps), replay_fraction(self.config.replay.ratio))

    def replay_slots(self) -> int:
        """The replay slots of one replay run."""
        rc, tc = self.config.replay, self.config.train
        return int(replay_positions(0, self.replay_steps() * int(tc.batch_size), replay_fraction(rc.ratio))[0].sum())


def _check(config: Experiment, test_tasks: Sequence[str]) -> None:
    from forgetting_jax.train.inputs import discover_tasks

    if not test_tasks:
        raise ValueError("replay.test_tasks is empty: name the new tasks to fine-tune with replay "
                         "(--config.replay.test_tasks=a,b or --tasks=a,b)")
    matrix_tasks = list(config.data.tasks) or discover_tasks(config.data)
    inside = [t for t in test_tasks if t in matrix_tasks]
    if inside:
        raise ValueError(f"replay test task(s) {', '.join(inside)} are rows of the matrix (data.tasks), which "
                         "train the prediction; choose tasks outside it")
    path = str(config.replay.heldout_file)
    if path and not os.path.isfile(path):
        raise ValueError(f"replay.heldout_file {path!r}: no such file")
    if int(config.matrix.max_length) > int(config.train.row_length):
        raise ValueError(f"matrix.max_length {config.matrix.max_length} > train.row_length "
                         f"{config.train.row_length}: replayed upstream examples would not fit a row")


def _matrix(config: Experiment, workdir: str, up: Upstream) -> tuple[np.ndarray, str, dict]:
    """(Z [M, N] of config.data.tasks, the experiment's directory, the matrix file's arrays): the
    experiment's matrix, built or reused by the run pipeline."""
    log.info("replay predicts forgetting from the matrix of config.data.tasks (W/experiments/<name>/forgetting.npz): "
             "building or reusing it as `forgetting-jax run` does")
    from forgetting_jax.analysis.matrix_file import read_matrix_file

    summary = run_pipeline(config, workdir, upstream=up)
    data = read_matrix_file(summary.matrix_path)  # the one validating reader of matrix files
    z, ids = data["Z"], data["example_ids"]
    if data["upstream_size"] != len(up.examples) or len(data["columns"]) != len(up.examples):
        raise ValueError(f"{summary.matrix_path}: field 'columns' keeps {len(data['columns'])} of "
                         f"{data['upstream_size']} upstream examples (em_columns={data['em_columns']}); replay "
                         f"predicts forgetting of every one of the config's {len(up.examples)}: set "
                         "matrix.em_columns=all")
    if ids != [e.id for e in up.examples]:
        raise ValueError(f"{summary.matrix_path}: its upstream examples differ from the config's")
    if z.shape[0] < 2:
        raise ValueError(f"{summary.matrix_path}: {z.shape[0]} row(s); the prediction needs at least 2 tasks")
    return z, summary.experiment_dir, data


def _new_task_representations(config: Experiment, workdir: str, up: Upstream) -> Callable[[Sequence[str]], dict]:
    """tasks -> the base model's representations of new tasks (not rows of the matrix), computed
    as the matrix's rows' are (matrix/representations.py) and cached the same way."""
    from forgetting_jax.matrix.representations import task_representation

    def represent(tasks: Sequence[str]) -> dict:
        s = int(config.matrix.task_examples)
        with up.base_weights() as weights:
            reps = [task_representation(up, weights, t, plan_finetune(config, workdir, t, up.base).examples["train"], s)
                    for t in tasks]
        return {"task_embeddings": np.stack([r.mean_D for r in reps]),
                "task_example_last_hidden": np.stack([r.last_SxD for r in reps]),
                "task_example_count": np.asarray([r.count for r in reps], np.int32)}

    return represent


def _probe(setup: Setup, task: str, method: str, columns: np.ndarray):
    """The online strategies' probe: forgetting of `columns` under the current parameters, and the
    row completed from it."""
    from forgetting_jax.score.scorer import Scorer

    matrix, up = setup.config.matrix, setup.up

    def probe(params_fn) -> dict:  # the parameters where they sit on the mesh
        nll, _, _ = Scorer(up.scoring_config, params_fn(), mesh=up.scoring_mesh).score(
            [up.examples[j].pair for j in columns], tokens_per_batch=int(matrix.tokens_per_batch))
        values = nll.astype(np.float64) - up.base_nll[columns]
        predicted = setup.completer.complete(method, columns[None], values[None], [task])[0]
        log.info("task %s: online probe of %d examples: mean forgetting %+.4f; row completed with %s", task,
                 len(columns), float(np.nanmean(values)), method)
        return {"columns": columns, "values": values, "predicted": predicted}

    return probe


def make_mixture(setup: Setup, task: str, strategy: Strategy, truth_N: np.ndarray, columns: np.ndarray,
                 predicted: dict[str, np.ndarray]) -> ReplayMixture:
    """The replay mixture of one (task, strategy) run (strategy is not none). predicted: the task's
    completed rows by method, and its baseline scores ("grad_prod_neg": replay/baselines.py)."""
    rc = setup.config.replay
    seed = [int(rc.seed), task_code(task)]
    temperature = float(rc.temperature)
    pool = setup.pool_N
    inputs: dict[str, Any] = {"strategy": strategy.name, "seed": int(rc.seed), "upstream": setup.up.scoring["upstream"]}
    if strategy.weighted:
        inputs["temperature"] = temperature
    uniform = replay_logits(np.zeros(len(pool)), 1.0, pool)
    order = None
    if strategy.kind == "random":
        logits = uniform
    elif strategy.kind == "ground_truth":
        logits = replay_logits(truth_N, temperature, pool)
    elif strategy.kind == "predicted":
        logits = replay_logits(predicted[strategy.method], temperature, pool)
        inputs["source"] = {"method": strategy.method, "k": int(rc.k), "columns": columns, "matrix": setup.z_train_MxN}
    elif strategy.kind == "gt_mir":
        order = baselines.repeated_best_of_n(truth_N, pool, setup.replay_slots(), int(strategy.candidates), seed)
        logits = uniform
        inputs["order"] = order
    elif strategy.kind == "ppl_median":
        logits = replay_logits(baselines.ppl_median_scores(setup.up.base_nll, pool), 1.0, pool)
    elif strategy.kind == "grad_prod_neg":
        logits = replay_logits(predicted["grad_prod_neg"], temperature, pool)
        inputs["gradient_dim"] = int(rc.gradient_dim)
    elif strategy.kind == "forecast":  # replay/weights_file.py
        logits, inputs["weights_file"] = weight_logits(weights_path(str(rc.weights_file), task),
                                                       [e.id for e in setup.up.examples], pool)
    else:  # online: random weights until the switch, then the probe's prediction
        logits = uniform
        switch = max(1, round(float(rc.online_fraction) * setup.replay_steps()))
        inputs["online"] = {"method": strategy.method, "k": int(rc.k), "columns": columns, "switch_step": switch,
                            "matrix": setup.z_train_MxN, "completion": dataclasses.asdict(_completion(rc))}
    inputs["weights"] = logits
    if strategy.kind == "online":
        schedule = OnlineSchedule(ReplaySchedule(uniform, seed), switch, _probe(setup, task, strategy.method, columns),
                                  temperature, pool, seed, strategy.top)
    elif order is not None:
        schedule = FixedSchedule(order)
    else:
        schedule = ReplaySchedule(logits, seed, strategy.top)
    return ReplayMixture(setup.up.examples, schedule, rc.ratio, _fingerprinted(inputs), strategy.name,
                         protocol=setup.protocol)


def _fingerprinted(inputs: dict) -> dict:
    """Arrays replaced by their fingerprints (run.json stays small and readable)."""
    def small(v):
        if isinstance(v, np.ndarray):
            return fingerprint(v)
        if isinstance(v, dict):
            return {k: small(x) for k, x in v.items()}
        return v

    return small(inputs)


def _completion(rc: Any) -> CompletionConfig:
    return CompletionConfig(rank=int(rc.rank), reg=float(rc.reg), seed=int(rc.seed))


def _gradient_scores(config: Experiment, workdir: str, up: Upstream, tasks: Sequence[str], pool_N: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """{task: grad_prod_neg scores [N]} from the base model's projected gradients (cached)."""
    from forgetting_jax.matrix.gradients import task_gradient, upstream_gradients

    dim, s = int(config.replay.gradient_dim), int(config.matrix.task_examples)
    with up.base_weights() as weights:
        example_NxP = upstream_gradients(up, weights, dim)
        return {t: baselines.grad_prod_neg_scores(
                    task_gradient(up, weights, t, plan_finetune(config, workdir, t, up.base).examples["train"], s, dim),
                    example_NxP, pool_N) for t in tasks}


def _plain_run(config: Experiment, workdir: str, up: Upstream, heldout: HeldOut, task: str
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The plain run of a test task: (its scores of the upstream examples [N], of the held-out
    set [H], its answers to the held-out prompts [H] (exact_match) or None)."""
    from forgetting_jax.matrix.model_files import remove
    from forgetting_jax.matrix.rows import stored_answers

    plan = plan_finetune(config, workdir, task, up.base)
    if heldout.indices is not None:  # a split: the upstream row holds the held-out scores and answers
        row = matrix_row(up, plan)
        nll = get_or_compute(config, workdir, up, row)[0]
        correct = None
        if heldout.answering is not None:
            correct = stored_answers(up, task, row.fingerprint)[heldout.indices]
        return nll, nll[heldout.indices], correct
    # a held-out file: the run keeps its model until both its rows are scored
    keep = dataclasses.replace(config, matrix=dataclasses.replace(config.matrix, keep_models=True))
    nll = get_or_compute(keep, workdir, up, matrix_row(up, plan))[0]
    row = RowPlan(plan, f"{task}.none", heldout.store, heldout.examples, heldout.scoring,
                  answers=heldout.answering is not None, answering=heldout.answering)
    held = get_or_compute(keep, workdir, up, row)[0]
    if not config.matrix.keep_models:
        remove(os.path.join(plan.run_dir, "model"))
    correct = None if heldout.answering is None else stored_answers(up, row.key, row.fingerprint, heldout.answering)
    return nll, held, correct


def run_replay(config: Experiment, workdir: str, strategies: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None) -> dict:
    """Runs (or completes) the replay experiment of config.replay in `workdir`; returns the results
    written to the experiment's replay/results.json (results["experiment_dir"]: that experiment's
    directory). strategies, tasks: override replay.strategies / test_tasks."""
    from forgetting_jax.matrix.rows import stored_answers
    from forgetting_jax.replay.report import write_replay_report

    started = time.perf_counter()
    rc = config.replay
    chosen = [parse_strategy(s) for s in (strategies or rc.strategies)]
    if not chosen:
        raise ValueError("replay.strategies is empty")
    test_tasks = list(tasks or rc.test_tasks)
    _check(config, test_tasks)
    if any(s.kind == "forecast" for s in chosen):  # every task's file read before any run trains
        if not rc.weights_file:
            raise ValueError("replay strategy forecast needs replay.weights_file (a forecast file of "
                             "`forgetting-jax forecast`; {task} in it is replaced by each test task)")
        for task in test_tasks:
            read_weights(weights_path(str(rc.weights_file), task))
    replay_fraction(rc.ratio)
    protocol = replay_protocol(config)

    up = prepare_upstream(config, workdir, make_mesh(config.mesh))
    z_train, experiment_dir, data = _matrix(config, workdir, up)
    runs = protocol.run_config(config)  # what every test-task run is planned with
    heldout = heldout_set(config, workdir, up, protocol.num_heldout(int(rc.num_heldout),
                                                                    int(np.isfinite(up.base_nll).sum())))
    pool = heldout.pool
    setup = Setup(runs, up, z_train, pool, heldout,
                  Completer(z_train, _completion(rc), int(rc.seed),
                            representations={k: data[k] for k in REPRESENTATION_ARRAYS if k in data},
                            task_representations=_new_task_representations(config, workdir, up),
                            rep_dot_config=rep_dot_config(config.predict.rep_dot_steps, config.predict.rep_dot_lr)),
                  protocol)
    log.info("replay (%s protocol): %d test tasks x %d strategies; %d held-out examples (%s, never replayed), a "
             "pool of %d; r = %s, T = %g; %d optimizer steps per replay run (none: %d), runs keep their %s step",
             protocol.name, len(test_tasks), len(chosen), len(heldout.examples), heldout.source, int(pool.sum()),
             replay_fraction(rc.ratio), float(rc.temperature), setup.replay_steps(), int(config.train.steps),
             protocol.result)

    ft_nll, truth, plain_heldout, plain_correct = {}, {}, {}, {}
    for i, task in enumerate(test_tasks):
        log.info("replay: test task %d/%d: %s: its plain fine-tuning run and true row", i + 1, len(test_tasks), task)
        ft_nll[task], plain_heldout[task], plain_correct[task] = _plain_run(runs, workdir, up, heldout, task)
        truth[task] = ft_nll[task].astype(np.float64) - up.base_nll
    truth_TxN = np.stack([truth[t] for t in test_tasks])
    columns = observed_columns(truth_TxN, pool, int(rc.k), int(rc.seed), test_tasks)
    observed = np.take_along_axis(truth_TxN, columns, axis=1)
    methods = sorted({s.method for s in chosen if s.kind == "predicted"})
    predicted = {m: setup.completer.complete(m, columns, observed, test_tasks) for m in methods}
    gradient_scores = (_gradient_scores(runs, workdir, up, test_tasks, pool)
                       if any(s.kind == "grad_prod_neg" for s in chosen) else {})

    answers = heldout.answering is not None
    forgetting: dict[str, dict[str, float]] = {s.name: {} for s in chosen}
    dropped: dict[str, dict[str, float]] = {s.name: {} for s in chosen}
    trained = []
    for i, task in enumerate(test_tasks):
        for strategy in chosen:
            correct = None
            if strategy.kind == "none":
                nll, correct = plain_heldout[task], plain_correct[task]
            else:
                log.info("replay: test task %d/%d: %s, strategy %s", i + 1, len(test_tasks), task, strategy.name)
                scores = {m: predicted[m][i] for m in methods}
                if task in gradient_scores:
                    scores["grad_prod_neg"] = gradient_scores[task]
                mixture = make_mixture(setup, task, strategy, truth[task], columns[i], scores)
                row = RowPlan(plan_finetune(runs, workdir, task, up.base, mixture), f"{task}.{strategy.name}",
                              heldout.store, heldout.examples, heldout.scoring, answers=answers,
                              mixture=mixture, answering=heldout.answering)
                nll, reused = get_or_compute(runs, workdir, up, row)
                if answers:
                    correct = stored_answers(up, row.key, row.fingerprint, heldout.answering)
                if not reused:
                    trained.append(f"{task}.{strategy.name}")
            forgetting[strategy.name][task] = float(np.nanmean(np.asarray(nll, np.float64) - heldout.base_nll))
            if correct is not None:
                dropped[strategy.name][task] = em_drop(heldout, correct)

    results = summarize(setup, test_tasks, chosen, forgetting, truth_TxN, predicted, dropped if answers else None)
    results["trained"] = trained
    results["seconds"] = time.perf_counter() - started
    results["experiment_dir"] = experiment_dir
    write_replay_report(experiment_dir, workdir, results)
    return results
