"""`forgetting-jax replay`: does replaying the examples predicted to be forgotten prevent forgetting?

  1. the forgetting matrix of config.data.tasks (built or reused by the `run` pipeline; the
     experiment's own W/experiments/<name>/forgetting.npz): its rows train the prediction;
  2. a seeded held-out set of `replay.num_heldout` upstream examples that is never replayed and
     only measures forgetting; the other scored upstream examples are the replay pool;
  3. per test task (replay.test_tasks, none of them a row of the matrix): the plain fine-tuning
     run and its full row of the upstream examples (the matrix store's row
     W/matrix/rows/<task>/<fp>.npz: the "none" strategy and the ground truth), k observed entries
     of that row for the predictions;
  4. per test task and strategy: a fine-tuning run with replay (train/finetune.py with a
     replay/mixture.py mixture; fingerprinted and reused like any run), scored on the held-out set
     (W/replay/heldout/rows/<task>.<strategy>/<fp>.npz); it runs train.steps optimizer steps, as
     the plain run does (replayed examples take a share r / (1 + r) of the batch slots), or
     ceil(train.steps (1 + r)) with replay.scale_steps (then it sees the plain run's task examples);
  5. the experiment's replay/results.json, table and figure (W/experiments/<name>/replay/),
     rebuilt from the finished runs' scores, and a section of its report.md; copies of them at
     W/replay/ and W/report.md (the most recent command's).

Forgetting of a run = the mean over held-out examples of NLL after - NLL of the base model.
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
from forgetting_jax.matrix.store import MatrixStore, upstream_tokens_fingerprint
from forgetting_jax.predict.comparison import rep_dot_config
from forgetting_jax.predict.methods import CompletionConfig
from forgetting_jax.replay.mixture import ReplayMixture, mixed_steps, replay_fraction, replay_positions
from forgetting_jax.replay.sampler import ReplaySchedule, replay_logits
from forgetting_jax.replay.stats import mean_ci, paired_tests
from forgetting_jax.replay.strategies import (Completer, OnlineSchedule, Strategy, observed_columns, parse_strategy,
                                              task_code)
from forgetting_jax.train.finetune import plan_finetune
from forgetting_jax.train.mesh import make_mesh
from forgetting_jax.utils.fingerprint import fingerprint

log = logging.getLogger("forgetting_jax.replay")


@dataclasses.dataclass
class Setup:
    """What every replay run of one experiment shares."""

    config: Experiment
    up: Upstream
    z_train_MxN: np.ndarray  # the matrix's rows
    pool_N: np.ndarray  # bool: may be replayed
    heldout_store: MatrixStore
    heldout_scoring: dict  # the held-out scores' share of their fingerprints
    completer: Completer


def split_upstream(base_nll_N: np.ndarray, num_heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out indices [H] sorted, pool mask [N]): a seeded draw of H scored examples; the pool
    is the other scored examples."""
    scored = np.flatnonzero(np.isfinite(base_nll_N))
    if not 0 < num_heldout < len(scored):
        raise ValueError(f"replay.num_heldout={num_heldout}: must be between 1 and the {len(scored)} scored "
                         "upstream examples minus the replay pool")
    heldout = np.sort(np.random.Generator(np.random.PCG64([seed, 1])).choice(scored, num_heldout, replace=False))
    pool = np.isfinite(base_nll_N)
    pool[heldout] = False
    return heldout, pool


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
    """The replay mixture of one (task, strategy) run (strategy is not none)."""
    rc = setup.config.replay
    seed = [int(rc.seed), task_code(task)]
    temperature = float(rc.temperature)
    pool = setup.pool_N
    inputs: dict[str, Any] = {"strategy": strategy.name, "seed": int(rc.seed), "upstream": setup.up.scoring["upstream"]}
    if strategy.weighted:
        inputs["temperature"] = temperature
    uniform = replay_logits(np.zeros(len(pool)), 1.0, pool)
    if strategy.kind == "random":
        logits = uniform
    elif strategy.kind == "ground_truth":
        logits = replay_logits(truth_N, temperature, pool)
    elif strategy.kind == "predicted":
        logits = replay_logits(predicted[strategy.method], temperature, pool)
        inputs["source"] = {"method": strategy.method, "k": int(rc.k), "columns": columns, "matrix": setup.z_train_MxN}
    else:  # online: random weights until the switch, then the probe's prediction
        logits = uniform
        switch = max(1, round(float(rc.online_fraction) * mixed_steps(
            int(setup.config.train.steps), replay_fraction(rc.ratio), bool(rc.scale_steps))))
        inputs["online"] = {"method": strategy.method, "k": int(rc.k), "columns": columns, "switch_step": switch,
                            "matrix": setup.z_train_MxN, "completion": dataclasses.asdict(_completion(rc))}
    inputs["weights"] = logits
    if strategy.kind == "online":
        schedule = OnlineSchedule(ReplaySchedule(uniform, seed), switch, _probe(setup, task, strategy.method, columns),
                                  temperature, pool, seed, strategy.top)
    else:
        schedule = ReplaySchedule(logits, seed, strategy.top)
    return ReplayMixture(setup.up.examples, schedule, rc.ratio, _fingerprinted(inputs), strategy.name,
                         scale_steps=bool(rc.scale_steps))


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


def run_replay(config: Experiment, workdir: str, strategies: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None) -> dict:
    """Runs (or completes) the replay experiment of config.replay in `workdir`; returns the results
    written to the experiment's replay/results.json (results["experiment_dir"]: that experiment's
    directory). strategies, tasks: override replay.strategies / test_tasks."""
    from forgetting_jax.replay.report import write_replay_report

    started = time.perf_counter()
    rc = config.replay
    chosen = [parse_strategy(s) for s in (strategies or rc.strategies)]
    if not chosen:
        raise ValueError("replay.strategies is empty")
    test_tasks = list(tasks or rc.test_tasks)
    _check(config, test_tasks)
    replay_fraction(rc.ratio)

    up = prepare_upstream(config, workdir, make_mesh(config.mesh))
    z_train, experiment_dir, data = _matrix(config, workdir, up)
    heldout, pool = split_upstream(up.base_nll, int(rc.num_heldout), int(rc.seed))
    heldout_examples = [up.examples[j] for j in heldout]
    heldout_fp = upstream_tokens_fingerprint([e.id for e in heldout_examples], [e.ids for e in heldout_examples])
    setup = Setup(config, up, z_train, pool, MatrixStore(os.path.join(workdir, "replay", "heldout")),
                  {"dtype": config.matrix.dtype, "upstream": heldout_fp},
                  Completer(z_train, _completion(rc), int(rc.seed),
                            representations={k: data[k] for k in REPRESENTATION_ARRAYS if k in data},
                            task_representations=_new_task_representations(config, workdir, up),
                            rep_dot_config=rep_dot_config(config.predict.rep_dot_steps, config.predict.rep_dot_lr)))
    log.info("replay: %d test tasks x %d strategies; %d held-out upstream examples (never replayed), a pool of %d; "
             "r = %s, T = %g; %d optimizer steps per replay run (none: %d)", len(test_tasks), len(chosen), len(heldout),
             int(pool.sum()), replay_fraction(rc.ratio), float(rc.temperature),
             mixed_steps(int(config.train.steps), replay_fraction(rc.ratio), bool(rc.scale_steps)),
             int(config.train.steps))

    ft_nll, truth = {}, {}
    for i, task in enumerate(test_tasks):
        log.info("replay: test task %d/%d: %s: its plain fine-tuning run and true row", i + 1, len(test_tasks), task)
        plan = plan_finetune(config, workdir, task, up.base)
        ft_nll[task] = get_or_compute(config, workdir, up, matrix_row(up, plan))[0]
        truth[task] = ft_nll[task].astype(np.float64) - up.base_nll
    truth_TxN = np.stack([truth[t] for t in test_tasks])
    columns = observed_columns(truth_TxN, pool, int(rc.k), int(rc.seed), test_tasks)
    observed = np.take_along_axis(truth_TxN, columns, axis=1)
    methods = sorted({s.method for s in chosen if s.kind == "predicted"})
    predicted = {m: setup.completer.complete(m, columns, observed, test_tasks) for m in methods}

    forgetting: dict[str, dict[str, float]] = {s.name: {} for s in chosen}
    trained = []
    for i, task in enumerate(test_tasks):
        for strategy in chosen:
            if strategy.kind == "none":
                nll = ft_nll[task][heldout]
            else:
                log.info("replay: test task %d/%d: %s, strategy %s", i + 1, len(test_tasks), task, strategy.name)
                mixture = make_mixture(setup, task, strategy, truth[task], columns[i],
                                       {m: predicted[m][i] for m in methods})
                row = RowPlan(plan_finetune(config, workdir, task, up.base, mixture), f"{task}.{strategy.name}",
                              setup.heldout_store, heldout_examples, setup.heldout_scoring, mixture=mixture)
                nll, reused = get_or_compute(config, workdir, up, row)
                if not reused:
                    trained.append(f"{task}.{strategy.name}")
            forgetting[strategy.name][task] = float(np.nanmean(np.asarray(nll, np.float64) - up.base_nll[heldout]))

    results = summarize(config, test_tasks, chosen, forgetting, truth_TxN, predicted, pool, len(heldout))
    results["trained"] = trained
    results["seconds"] = time.perf_counter() - started
    results["experiment_dir"] = experiment_dir
    write_replay_report(experiment_dir, workdir, results)
    return results


def summarize(config: Experiment, tasks: Sequence[str], chosen: Sequence[Strategy], forgetting: dict,
              truth_TxN: np.ndarray, predicted: dict[str, np.ndarray], pool_N: np.ndarray, num_heldout: int) -> dict:
    """Per-strategy means and CIs of held-out forgetting across tasks, paired tests, and how well
    each method's completed rows rank the pool's true forgetting."""
    from scipy import stats

    rc = config.replay
    confidence = float(rc.confidence)
    ratio = replay_fraction(rc.ratio)
    steps = mixed_steps(int(config.train.steps), ratio, bool(rc.scale_steps))
    replayed = int(replay_positions(0, steps * int(config.train.batch_size), ratio)[0].sum())
    values = {s.name: np.asarray([forgetting[s.name][t] for t in tasks]) for s in chosen}
    names = [s.name for s in chosen]
    summary = {}
    for s in chosen:
        entry = mean_ci(values[s.name], confidence)
        if "none" in values and s.name != "none":
            entry["reduction_vs_none"] = float(np.mean(values["none"] - values[s.name]) / np.mean(values["none"]))
        summary[s.name] = entry
    tests = []
    for s in chosen:
        for reference in ("random", "none"):
            if s.kind in ("none", "random") and not (s.kind == "random" and reference == "none"):
                continue
            if reference in values:
                tests.append({"strategy": s.name, "reference": reference,
                              **paired_tests(values[s.name], values[reference], confidence)})
    prediction = {}
    for method, rows in predicted.items():
        rho = [stats.spearmanr(rows[i][pool_N], truth_TxN[i][pool_N], nan_policy="omit").statistic
               for i in range(len(tasks))]
        prediction[method] = {"spearman_mean": float(np.nanmean(rho)), "spearman": [float(r) for r in rho]}
    return {
        "settings": {"ratio": str(ratio), "temperature": float(rc.temperature), "k": int(rc.k),
                     "num_heldout": num_heldout, "pool": int(pool_N.sum()), "seed": int(rc.seed),
                     "train_steps": int(config.train.steps), "replay_steps": steps,
                     "scale_steps": bool(rc.scale_steps), "replayed_per_run": replayed,
                     "task_examples_per_run": steps * int(config.train.batch_size) - replayed,
                     "batch_size": int(config.train.batch_size), "confidence": confidence},
        "tasks": list(tasks), "strategies": names,
        "steps": {s.name: int(config.train.steps) if s.kind == "none" else steps for s in chosen},
        "forgetting": {name: dict(forgetting[name]) for name in names},
        "summary": summary, "tests": tests, "prediction": prediction,
    }
